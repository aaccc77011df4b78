//! The allowlist: `actions.toml`, parsed and validated once at start-up.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vigil_wire::{ActionInfo, ActionKind};

#[derive(Debug, thiserror::Error)]
pub enum ActionsError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: action {name:?}: {problem}")]
    Invalid {
        path: PathBuf,
        name: String,
        problem: String,
    },
}

/// What an action does, with everything it needs and nothing more.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Restart the containers of these services.
    Restart {
        services: Vec<String>,
    },
    /// Restart every container of the project.
    RestartAll,
    Recreate {
        service: String,
    },
    Exec {
        service: String,
        argv: Vec<String>,
    },
    Prune,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub name: String,
    pub description: String,
    pub operation: Operation,
    pub timeout: Duration,
    pub docker_cli: Vec<String>,
    /// Only with a human's approval (`approval`; broad actions by default).
    pub approval: bool,
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self.operation {
            Operation::Restart { .. } | Operation::RestartAll => ActionKind::Restart,
            Operation::Recreate { .. } => ActionKind::Recreate,
            Operation::Exec { .. } => ActionKind::Exec,
            Operation::Prune => ActionKind::Prune,
        }
    }

    pub fn info(&self) -> ActionInfo {
        let services = match &self.operation {
            Operation::Restart { services } => services.clone(),
            Operation::RestartAll => vec!["*".to_string()],
            Operation::Recreate { service } | Operation::Exec { service, .. } => {
                vec![service.clone()]
            }
            Operation::Prune => Vec::new(),
        };
        ActionInfo {
            name: self.name.clone(),
            description: self.description.clone(),
            kind: self.kind(),
            services,
            timeout_ms: self.timeout.as_millis() as u64,
            approval: self.approval,
        }
    }
}

/// The validated allowlist, in file order.
#[derive(Debug, Clone)]
pub struct Allowlist {
    actions: Vec<Action>,
}

impl Allowlist {
    pub fn get(&self, name: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter()
    }

    pub fn longest_timeout(&self) -> Duration {
        self.actions
            .iter()
            .map(|a| a.timeout)
            .max()
            .unwrap_or_default()
    }

    pub fn load(path: &Path) -> Result<Self, ActionsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ActionsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ActionsError> {
        let file: ActionsFile = basic_toml::from_str(text).map_err(|e| ActionsError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut seen = HashSet::new();
        let mut actions = Vec::with_capacity(file.action.len());
        for raw in file.action {
            let name = raw.name.clone();
            let invalid = |problem: String| ActionsError::Invalid {
                path: path.to_owned(),
                name: name.clone(),
                problem,
            };
            if !valid_name(&raw.name) {
                return Err(invalid("name must match [a-z][a-z0-9_]*".into()));
            }
            if !seen.insert(raw.name.clone()) {
                return Err(invalid("duplicate name".into()));
            }
            let action = raw.validate().map_err(invalid)?;
            actions.push(action);
        }
        if actions.is_empty() {
            return Err(ActionsError::Parse {
                path: path.to_owned(),
                message: "no [[action]] entries".into(),
            });
        }
        Ok(Self { actions })
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionsFile {
    #[serde(default)]
    action: Vec<RawAction>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    name: String,
    description: String,
    kind: ActionKind,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    all_services: bool,
    #[serde(default)]
    argv: Vec<String>,
    timeout_s: f64,
    docker_cli: Vec<String>,
    /// Default: true for the broad ones (prune, restart of all services).
    #[serde(default)]
    approval: Option<bool>,
}

impl RawAction {
    fn validate(self) -> Result<Action, String> {
        if self.description.trim().is_empty() {
            return Err("empty description".into());
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(format!(
                "timeout_s must be greater than zero (got {})",
                self.timeout_s
            ));
        }
        if self.docker_cli.is_empty() || self.docker_cli.iter().any(|a| a.is_empty()) {
            return Err("empty docker_cli argv".into());
        }
        if self.services.iter().any(|s| s.trim().is_empty()) {
            return Err("empty service name".into());
        }
        if self.kind != ActionKind::Exec && !self.argv.is_empty() {
            return Err("argv is only for kind = \"exec\"".into());
        }
        if self.kind != ActionKind::Restart && self.all_services {
            return Err("all_services is only for kind = \"restart\"".into());
        }
        let one_service = |services: Vec<String>| match <[String; 1]>::try_from(services) {
            Ok([service]) => Ok(service),
            Err(_) => Err("needs exactly one service".to_string()),
        };
        let approval = self
            .approval
            .unwrap_or(self.kind == ActionKind::Prune || self.all_services);
        let operation = match self.kind {
            ActionKind::Restart => match (self.all_services, self.services.is_empty()) {
                (true, true) => Operation::RestartAll,
                (false, false) => Operation::Restart {
                    services: self.services,
                },
                (true, false) => return Err("give services or all_services, not both".into()),
                (false, true) => return Err("needs services or all_services = true".into()),
            },
            ActionKind::Recreate => Operation::Recreate {
                service: one_service(self.services)?,
            },
            ActionKind::Exec => {
                if self.argv.is_empty() || self.argv.iter().any(|a| a.is_empty()) {
                    return Err("empty argv".into());
                }
                Operation::Exec {
                    service: one_service(self.services)?,
                    argv: self.argv,
                }
            }
            ActionKind::Prune => {
                if !self.services.is_empty() {
                    return Err("prune takes no services".into());
                }
                Operation::Prune
            }
        };
        Ok(Action {
            name: self.name,
            description: self.description,
            operation,
            timeout: Duration::from_secs_f64(self.timeout_s),
            docker_cli: self.docker_cli,
            approval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Allowlist, ActionsError> {
        Allowlist::parse(Path::new("actions.toml"), text)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const OK: &str = r#"
[[action]]
name = "restart_api_core"
description = "restart it"
kind = "restart"
services = ["api-core"]
timeout_s = 2.5
docker_cli = ["docker", "compose", "restart", "api-core"]
"#;

    #[test]
    fn the_shipped_allowlist_is_valid_and_complete() {
        let text = include_str!("../../actions.toml");
        let list = parse(text).unwrap();
        let names: Vec<_> = list.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "restart_api_core",
                "restart_gateway",
                "restart_all",
                "recreate_api_core",
                "reload_nginx",
                "prune_docker"
            ]
        );
        assert_eq!(
            list.get("reload_nginx").unwrap().operation,
            Operation::Exec {
                service: "nginx".into(),
                argv: vec!["nginx".into(), "-s".into(), "reload".into()]
            }
        );
        assert_eq!(
            list.get("restart_all").unwrap().operation,
            Operation::RestartAll
        );
        assert_eq!(list.get("prune_docker").unwrap().kind(), ActionKind::Prune);
        let approval: Vec<_> = list
            .iter()
            .filter(|a| a.approval)
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(approval, ["restart_all", "prune_docker"]);
    }

    #[test]
    fn broad_actions_need_approval_unless_the_file_says_otherwise() {
        let prune = "[[action]]\nname = \"prune\"\ndescription = \"d\"\nkind = \"prune\"\ntimeout_s = 1\ndocker_cli = [\"x\"]\n";
        let all = "[[action]]\nname = \"all\"\ndescription = \"d\"\nkind = \"restart\"\nall_services = true\ntimeout_s = 1\ndocker_cli = [\"x\"]\n";
        let list = parse(&format!("{OK}{prune}{all}")).unwrap();
        let needs = |n: &str| list.get(n).unwrap().info().approval;
        assert!(!needs("restart_api_core"));
        assert!(needs("prune"));
        assert!(needs("all"));
        let list = parse(&format!("{}approval = false\n", prune)).unwrap();
        assert!(!list.get("prune").unwrap().approval);
        let list = parse(&format!("{OK}approval = true\n")).unwrap();
        assert!(list.get("restart_api_core").unwrap().approval);
    }

    #[test]
    fn a_valid_action_reads_with_fractional_timeout() {
        let list = parse(OK).unwrap();
        let a = list.get("restart_api_core").unwrap();
        assert_eq!(a.timeout, Duration::from_millis(2500));
        assert_eq!(a.info().timeout_ms, 2500);
        assert_eq!(a.info().services, ["api-core"]);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err(&OK.replace("timeout_s", "shell = \"x\"\ntimeout_s"));
        assert!(e.contains("actions.toml") && e.contains("shell"), "{e}");
    }

    #[test]
    fn unknown_kind_is_refused() {
        let e = err(&OK.replace("\"restart\"", "\"reboot\""));
        assert!(e.contains("reboot"), "{e}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let e = err(&format!("{OK}{OK}"));
        assert!(e.contains("duplicate name"), "{e}");
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["Restart", "1restart", "restart-api", "", "rm;ls"] {
            let e = err(&OK.replace("\"restart_api_core\"", &format!("{bad:?}")));
            assert!(e.contains("[a-z][a-z0-9_]*"), "{bad}: {e}");
        }
    }

    #[test]
    fn empty_argv_is_refused() {
        let exec = OK
            .replace("\"restart\"", "\"exec\"")
            .replace("timeout_s", "argv = []\ntimeout_s");
        assert!(err(&exec).contains("empty argv"));
        let cli = OK.replace(r#"["docker", "compose", "restart", "api-core"]"#, "[]");
        assert!(err(&cli).contains("empty docker_cli argv"));
    }

    #[test]
    fn zero_timeout_is_refused() {
        let e = err(&OK.replace("2.5", "0"));
        assert!(e.contains("timeout_s must be greater than zero"), "{e}");
    }

    #[test]
    fn shapes_are_checked_per_kind() {
        let recreate_two = OK
            .replace("\"restart\"", "\"recreate\"")
            .replace(r#"["api-core"]"#, r#"["a", "b"]"#);
        assert!(err(&recreate_two).contains("exactly one service"));
        let prune_with_service = OK.replace("\"restart\"", "\"prune\"");
        assert!(err(&prune_with_service).contains("prune takes no services"));
        let restart_nothing = OK.replace(r#"services = ["api-core"]"#, "");
        assert!(err(&restart_nothing).contains("needs services or all_services"));
    }

    #[test]
    fn an_empty_file_is_refused() {
        assert!(err("").contains("no [[action]] entries"));
    }
}
