//! A synthetic dbt project for benchmarks: N models in layers of about sqrt(N), each `ref`ing
//! 1-3 models of earlier layers (layer-0 models read the `raw.events` source), every fifth model
//! incremental with an `is_incremental()` filter, and a 1,000-row seed. Deterministic.

use std::path::Path;

use crate::error::DbtError;

fn write(root: &Path, path: &str, text: &str) -> Result<(), DbtError> {
    let p = root.join(path);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).map_err(|source| DbtError::Io {
            path: parent.to_owned(),
            source,
        })?;
    }
    std::fs::write(&p, text).map_err(|source| DbtError::Io { path: p, source })
}

/// Writes the project into `root` (which should be empty).
pub fn write_project(root: &Path, models: usize) -> Result<(), DbtError> {
    write(
        root,
        "dbt_project.yml",
        "name: synthetic\nprofile: synthetic\nmodels:\n  synthetic:\n    +materialized: table\n",
    )?;
    write(
        root,
        "models/sources.yml",
        "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: events\n",
    )?;
    let mut seed = String::from("id,kind,amount\n");
    for i in 0..1000 {
        seed.push_str(&format!(
            "{i},{},{}\n",
            ["a", "b", "c"][i % 3],
            (i * 37) % 1000
        ));
    }
    write(root, "seeds/events.csv", &seed)?;
    let width = ((models as f64).sqrt().ceil() as usize).max(1);
    // The project's one generator: the same project for the same size, forever.
    let mut rng = rainbow_engine::random::SplitMix64::new(0x5EED);
    let mut next = |n: usize| rng.index(n);
    for i in 0..models {
        let layer = i / width;
        let name = format!("m{i:05}");
        let mut sql = String::new();
        let incremental = i % 5 == 4;
        if incremental {
            sql.push_str("{{ config(materialized='incremental', unique_key='id') }}\n");
        }
        if layer == 0 {
            sql.push_str("select id, kind, amount from {{ source('raw', 'events') }}");
        } else {
            let mut ups: Vec<usize> = (0..1 + next(3)).map(|_| next(layer * width)).collect();
            ups.sort_unstable();
            ups.dedup();
            let selects: Vec<String> = ups
                .iter()
                .map(|u| format!("select id, kind, amount from {{{{ ref('m{u:05}') }}}}"))
                .collect();
            sql.push_str(&selects.join("\nunion all\n"));
        }
        if incremental {
            sql.push_str(
                "\n{% if is_incremental() %}where id > (select max(id) from {{ this }}){% endif %}",
            );
        }
        sql.push('\n');
        write(root, &format!("models/layer{layer:03}/{name}.sql"), &sql)?;
    }
    Ok(())
}
