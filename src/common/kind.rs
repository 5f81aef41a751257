//! The kinds of model prodcat trains and serves, listed once, and the head a model's output has.
//!
//! A card's `model` section ([`crate::registry::ModelKind`]) carries a kind with the section that
//! kind needs; [`crate::models::FAMILIES`] gives each kind its behaviour. Everything that lists
//! kinds (the CLI's choices, `auto`'s candidates, the `stage` of an output row) iterates
//! [`Kind::ALL`] or the families instead of spelling them out.

use serde::{Deserialize, Serialize};

/// A kind of model. Also what an output row's `stage` names: the kind of model whose
/// probabilities the row reports (a cascade's rows report `lexical`, `transformer` or `ensemble`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Hashed word and character n-grams into a linear classifier: one graph over feature ids.
    Lexical,
    /// A fine-tuned encoder with merged adapters: one graph over tokenizer ids.
    Transformer,
    /// The weighted average of a lexical and a transformer member's probabilities.
    Ensemble,
    /// The lexical member first; rows it is unsure of go to the ensemble of both members.
    Cascade,
}

impl Kind {
    /// Every kind, in the order reports list them.
    pub const ALL: [Kind; 4] = [Kind::Lexical, Kind::Transformer, Kind::Ensemble, Kind::Cascade];

    /// The kind's name in cards, outputs, logs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lexical => "lexical",
            Kind::Transformer => "transformer",
            Kind::Ensemble => "ensemble",
            Kind::Cascade => "cascade",
        }
    }

    /// The kind named `name`, or an error listing the kinds.
    pub fn parse(name: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| format!("unknown model kind `{name}` (one of {})", Kind::ALL.map(Kind::name).join(", ")))
    }

    /// Whether the kind is made of a lexical and a transformer member.
    pub fn is_composite(self) -> bool {
        matches!(self, Kind::Ensemble | Kind::Cascade)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a model's output rows mean: how it is trained (the loss), exported (the graph's
/// `probabilities`), evaluated (the report's metrics) and served (the label of a row). Recorded in
/// every card (`head`; cards from before the field are `single_label`). Every place that depends
/// on it matches on it, so a new head is a new variant the compiler walks through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// One label per text among mutually exclusive classes: cross-entropy on a softmax, the label
    /// is the most likely class, accuracy and macro-F1 over those labels.
    #[default]
    SingleLabel,
    /// Any number of labels per text (at least one): one binary decision per class, a sigmoid on
    /// each logit, a row's labels the classes at or above their own threshold (tuned on validation
    /// and stored in the card; the most likely class when none is), micro/macro-F1, subset
    /// accuracy and Hamming loss over the label sets.
    MultiLabel,
}

impl Head {
    /// The head's name in cards and messages.
    pub fn name(self) -> &'static str {
        match self {
            Head::SingleLabel => "single_label",
            Head::MultiLabel => "multi_label",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.name()), Ok(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), serde_json::json!(kind.name()));
        }
        let err = Kind::parse("svm").unwrap_err();
        assert!(err.contains("`svm`") && err.contains("lexical, transformer, ensemble, cascade"), "{err}");
        for head in [Head::SingleLabel, Head::MultiLabel] {
            assert_eq!(serde_json::to_value(head).unwrap(), serde_json::json!(head.name()));
        }
    }
}
