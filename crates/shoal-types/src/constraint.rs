//! Placement constraints as docker writes them: `node.hostname==node2`, `node.role!=manager`,
//! `node.id==...`, `node.labels.zone==east`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Node;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    pub key: ConstraintKey,
    pub equal: bool,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstraintKey {
    Hostname,
    Id,
    Role,
    Label(String),
}

impl Constraint {
    pub fn parse(s: &str) -> Result<Constraint, String> {
        let (lhs, rhs, equal) = if let Some((l, r)) = s.split_once("!=") {
            (l, r, false)
        } else if let Some((l, r)) = s.split_once("==") {
            (l, r, true)
        } else {
            return Err(format!(
                "invalid constraint {s:?}: expected KEY==VALUE or KEY!=VALUE, e.g. node.hostname==node2"
            ));
        };
        let (lhs, value) = (lhs.trim(), rhs.trim());
        if value.is_empty() {
            return Err(format!("invalid constraint {s:?}: empty value"));
        }
        let key = match lhs {
            "node.hostname" => ConstraintKey::Hostname,
            "node.id" => ConstraintKey::Id,
            "node.role" => {
                if value != "manager" && value != "worker" {
                    return Err(format!(
                        "invalid constraint {s:?}: node.role is manager or worker"
                    ));
                }
                ConstraintKey::Role
            }
            l => match l.strip_prefix("node.labels.") {
                Some(label) if !label.is_empty() => ConstraintKey::Label(label.to_string()),
                _ => {
                    return Err(format!(
                        "invalid constraint {s:?}: unknown key {l:?} (use node.hostname, node.id, node.role or node.labels.KEY)"
                    ));
                }
            },
        };
        Ok(Constraint {
            key,
            equal,
            value: value.to_string(),
        })
    }

    pub fn matches(&self, node: &Node) -> bool {
        let actual: Option<String> = match &self.key {
            ConstraintKey::Hostname => Some(node.hostname().to_string()),
            ConstraintKey::Id => Some(node.id.clone()),
            ConstraintKey::Role => Some(node.spec.role.to_string()),
            ConstraintKey::Label(k) => node.spec.labels.get(k).cloned(),
        };
        match actual {
            Some(a) => (a == self.value) == self.equal,
            // A missing label never equals, so it satisfies `!=` only.
            None => !self.equal,
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match &self.key {
            ConstraintKey::Hostname => "node.hostname".to_string(),
            ConstraintKey::Id => "node.id".to_string(),
            ConstraintKey::Role => "node.role".to_string(),
            ConstraintKey::Label(k) => format!("node.labels.{k}"),
        };
        write!(
            f,
            "{key}{}{}",
            if self.equal { "==" } else { "!=" },
            self.value
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for s in [
            "node.hostname==node2",
            "node.role!=manager",
            "node.labels.zone==east",
        ] {
            assert_eq!(Constraint::parse(s).unwrap().to_string(), s);
        }
        assert!(Constraint::parse("node.colour==red").is_err());
        assert!(Constraint::parse("node.hostname=node2").is_err());
        assert!(Constraint::parse("node.role==boss").is_err());
    }
}
