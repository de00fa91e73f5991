//! Where model folders are found, so that every binary finds the model `scripts/fetch-model`
//! installed from any working directory.
//!
//! `SUTRA_MODEL_DIR` names a folder outright. Otherwise a model *name* (`MODEL_NAME`, default
//! [`DEFAULT_MODEL`]) is looked up under each model root in turn: `./models` (a checkout, as
//! before), then the per-user data directory `$XDG_DATA_HOME/sutra/models` (by default
//! `~/.local/share/sutra/models`), where `scripts/fetch-model` installs. A name with a hub
//! owner (`nomic-ai/nomic-embed-text-v1.5`, as the seed writes it) is tried as given, then by
//! its last component.

use std::path::{Path, PathBuf};

/// The default model (`scripts/fetch-model`).
pub const DEFAULT_MODEL: &str = "all-MiniLM-L6-v2";

/// The per-user model root: `$XDG_DATA_HOME/sutra/models`, or
/// `$HOME/.local/share/sutra/models`; `None` without either variable.
pub fn user_models_dir() -> Option<PathBuf> {
    let from = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    from("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| from("HOME").map(|home| Path::new(&home).join(".local/share")))
        .map(|data| data.join("sutra").join("models"))
}

/// The model roots, in the order they are searched.
pub fn model_roots() -> Vec<PathBuf> {
    std::iter::once(PathBuf::from("models"))
        .chain(user_models_dir())
        .collect()
}

/// The folders that may hold the model `name`, in search order.
pub fn candidates(name: &str) -> Vec<PathBuf> {
    let mut names = vec![name];
    if let Some(last) = name.rsplit('/').next().filter(|last| *last != name) {
        names.push(last);
    }
    model_roots()
        .iter()
        .flat_map(|root| names.iter().map(move |name| root.join(name)))
        .collect()
}

/// The first candidate folder of `name` that exists.
pub fn find_model(name: &str) -> Option<PathBuf> {
    candidates(name).into_iter().find(|dir| dir.is_dir())
}

/// The folder to load: `explicit` (SUTRA_MODEL_DIR) as given; else the model `name` (default
/// [`DEFAULT_MODEL`]) where it is found.
///
/// # Errors
/// When no candidate folder exists: a message listing where it looked and how to fix it.
pub fn resolve_model_dir(explicit: Option<&Path>, name: Option<&str>) -> Result<PathBuf, String> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    let name = name.unwrap_or(DEFAULT_MODEL);
    find_model(name).ok_or_else(|| {
        let looked: Vec<String> = candidates(name)
            .iter()
            .map(|dir| dir.display().to_string())
            .collect();
        let fetch = if name == DEFAULT_MODEL {
            "run ./scripts/fetch-model"
        } else {
            "put the model's folder (config.json, tokenizer.json, model.safetensors) there"
        };
        format!(
            "model {name} not found (looked in {}); {fetch}, or set SUTRA_MODEL_DIR to its folder",
            looked.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names_are_tried_whole_then_by_their_last_component() {
        let found = candidates("nomic-ai/nomic-embed-text-v1.5");
        assert_eq!(found[0], Path::new("models/nomic-ai/nomic-embed-text-v1.5"));
        assert_eq!(found[1], Path::new("models/nomic-embed-text-v1.5"));
        assert_eq!(
            candidates(DEFAULT_MODEL)[0],
            Path::new("models/all-MiniLM-L6-v2")
        );
    }

    #[test]
    fn an_explicit_folder_wins_and_a_missing_name_says_where_it_looked() {
        let explicit = Path::new("/somewhere/else");
        assert_eq!(
            resolve_model_dir(Some(explicit), Some("x")).unwrap(),
            explicit
        );
        let error = resolve_model_dir(None, Some("no-such-model-anywhere")).unwrap_err();
        assert!(error.contains("models/no-such-model-anywhere"), "{error}");
        assert!(error.contains("SUTRA_MODEL_DIR"), "{error}");
    }
}
