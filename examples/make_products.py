"""Writes prodcat's built-in demo catalogue: hand-picked product vocabulary per category,
combined into merchant-style titles. Each product appears 1-3 times with merchant variations
(same `product_id`), as in real catalogues, so splits must be grouped by product.

    python3 examples/make_products.py   # rewrites examples/products*.csv (deterministic)
"""
import csv
import random

CATEGORIES = {
    "Mobile Phones": {
        "brands": ["Samsung", "Apple", "Google", "Xiaomi", "OnePlus", "Motorola", "Nokia", "Sony", "Oppo", "Honor"],
        "models": ["Galaxy S23", "iPhone 14", "Pixel 8", "Redmi Note 12", "Nord CE 3", "Moto G54", "G42", "Xperia 10 V", "Reno 10", "Magic5 Lite"],
        "specs": ["128GB", "256GB", "5G", "Dual SIM", "Unlocked", "6.1 inch", "Midnight Black", "Sim Free", "8GB RAM", "4G LTE"],
        "nouns": ["Smartphone", "Mobile Phone", "Phone"],
    },
    "Laptops": {
        "brands": ["Lenovo", "HP", "Dell", "ASUS", "Acer", "Apple", "Microsoft", "MSI", "Huawei", "Razer"],
        "models": ["ThinkPad E14", "Pavilion 15", "XPS 13", "ZenBook 14", "Aspire 5", "MacBook Air M2", "Surface Laptop 5", "Modern 14", "MateBook D16", "Blade 15"],
        "specs": ["Intel Core i5", "Ryzen 7", "16GB RAM", "512GB SSD", "15.6\" FHD", "Windows 11", "14 inch", "1TB SSD", "RTX 4060", "Backlit Keyboard"],
        "nouns": ["Laptop", "Notebook", "Ultrabook"],
    },
    "Washing Machines": {
        "brands": ["Bosch", "Samsung", "LG", "Beko", "Hotpoint", "Miele", "Indesit", "Whirlpool", "AEG", "Haier"],
        "models": ["Serie 6 WAU28T", "WW90T", "F4V5", "WTK74011W", "NSWM1045", "WWD320", "MTWE91495", "FFB 9458", "L7FEE965R", "HW80"],
        "specs": ["9kg", "1400 rpm", "8kg", "A rated", "Freestanding", "Integrated", "Steam", "Quick Wash", "White", "Inverter Motor"],
        "nouns": ["Washing Machine", "Washer", "Front Loader"],
    },
    "Fridges": {
        "brands": ["Bosch", "Samsung", "LG", "Beko", "Smeg", "Liebherr", "Hisense", "Fridgemaster", "Russell Hobbs", "Haier"],
        "models": ["KSV36VWEP", "RR39", "GLT51", "UR4584", "FAB28", "TP1720", "RL6", "MUL4892", "RHUCLF1", "HTF-452"],
        "specs": ["Larder", "Under Counter", "Tall", "60cm", "Retro", "Stainless Steel", "E energy", "No Frost", "Cream", "Freestanding"],
        "nouns": ["Fridge", "Larder Fridge", "Refrigerator"],
    },
    "Televisions": {
        "brands": ["Samsung", "LG", "Sony", "Panasonic", "Philips", "TCL", "Hisense", "Toshiba", "Sharp", "JVC"],
        "models": ["QE55Q60C", "OLED55C3", "Bravia KD-50X75", "TX-43MX650", "55PUS8108", "50C645", "65A6K", "43UV2363", "32FG2K", "LT-40CA"],
        "specs": ["55 inch", "4K Ultra HD", "Smart TV", "HDR10+", "OLED", "QLED", "Freeview Play", "43\"", "Dolby Vision", "65 inch"],
        "nouns": ["TV", "Television", "Smart TV"],
    },
    "Running Shoes": {
        "brands": ["Nike", "Adidas", "ASICS", "Brooks", "New Balance", "Saucony", "Hoka", "Puma", "On", "Mizuno"],
        "models": ["Pegasus 40", "Ultraboost Light", "Gel-Nimbus 25", "Ghost 15", "Fresh Foam 1080", "Ride 16", "Clifton 9", "Velocity Nitro", "Cloudmonster", "Wave Rider 27"],
        "specs": ["Men's", "Women's", "UK 9", "Size 7", "Breathable Mesh", "Road", "Trail", "Lightweight", "Cushioned", "Wide Fit"],
        "nouns": ["Running Shoes", "Trainers", "Running Trainers"],
    },
    "Books": {
        "brands": ["Penguin", "HarperCollins", "Vintage", "Bloomsbury", "Faber", "Macmillan", "Orion", "Hodder", "Picador", "Canongate"],
        "models": ["The Midnight Library", "Sapiens", "Atomic Habits", "Normal People", "The Thursday Murder Club", "Where the Crawdads Sing", "Educated", "The Silent Patient", "Lessons in Chemistry", "Klara and the Sun"],
        "specs": ["Paperback", "Hardcover", "Kindle Edition", "Illustrated Edition", "Reprint", "Large Print", "Signed Copy", "First Edition", "Book Club Edition", "Audiobook CD"],
        "nouns": ["Novel", "Book", "Bestseller"],
    },
    "Coffee Machines": {
        "brands": ["De'Longhi", "Nespresso", "Sage", "Krups", "Tassimo", "Melitta", "Philips", "Gaggia", "Lavazza", "Morphy Richards"],
        "models": ["Magnifica S", "Vertuo Next", "Barista Express", "Evidence", "My Way 2", "Caffeo Solo", "LatteGo 3200", "Classic Pro", "A Modo Mio Jolie", "Accents"],
        "specs": ["Bean to Cup", "Pod Machine", "15 bar", "Milk Frother", "1.8L Tank", "Espresso", "Capsule", "Silver", "Grinder", "Filter"],
        "nouns": ["Coffee Machine", "Coffee Maker", "Espresso Machine"],
    },
}

STYLES = [
    "{brand} {model} {spec1} {noun}",
    "{brand} {model} {noun} - {spec1}, {spec2}",
    "{noun} {brand} {model} {spec1} {spec2}",
    "{brand} {model} ({spec1}, {spec2})",
    "{model} by {brand} {spec1} {noun}",
    "{brand} {noun} {model} {spec2}",
]


def main() -> None:
    rng = random.Random(20261122)
    rows = []
    product_id = 0
    for category, vocab in CATEGORIES.items():
        for i in range(30):
            product_id += 1
            brand = vocab["brands"][i % len(vocab["brands"])]
            model = vocab["models"][(i * 7 + 3) % len(vocab["models"])]
            for _ in range(rng.randint(1, 3)):
                spec1, spec2 = rng.sample(vocab["specs"], 2)
                title = rng.choice(STYLES).format(brand=brand, model=model, spec1=spec1, spec2=spec2, noun=rng.choice(vocab["nouns"]))
                if rng.random() < 0.3:
                    title = title.lower()
                rows.append({"product_id": f"P{product_id:04d}", "title": title, "category": category})
    rng.shuffle(rows)
    # Products are split, never rows: a product's merchant variants stay on one side.
    products = sorted({r["product_id"] for r in rows})
    rng.shuffle(products)
    held_out = set(products[: len(products) // 5])
    for name, keep in [("products.csv", lambda r: r["product_id"] not in held_out), ("products-eval.csv", lambda r: r["product_id"] in held_out)]:
        with open(f"examples/{name}", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["id", "product_id", "title", "category"])
            w.writeheader()
            for n, r in enumerate(x for x in rows if keep(x)):
                w.writerow({"id": f"{name.split('.')[0]}-{n + 1}", **r})


if __name__ == "__main__":
    main()
