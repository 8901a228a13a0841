//! The configuration reference (`docs/CONFIG.md`), generated from the same JSON Schema that
//! editors use, so the reference always lists every key the code accepts, with its type,
//! default and documentation.

use std::fmt::Write as _;

use serde_json::Value;

/// Renders the pipeline configuration reference as Markdown.
pub fn reference_markdown() -> String {
    let schema: Value = serde_json::from_str(&super::json_schema()).expect("the schema is JSON");
    let defs = schema["$defs"].as_object().cloned().unwrap_or_default();
    let mut out = String::new();
    out.push_str("# Pipeline configuration reference\n\n");
    out.push_str(
        "Generated from the configuration types (`tripline schema --markdown`); the same content as \
         `schemas/pipeline.schema.json`, which editors use to complete and check pipeline files. \
         Every mapping rejects unknown keys. Values may use `${VAR}` or `${VAR:-default}` \
         environment variables, and any key can be overridden with `--set path.to.key=value`.\n\n",
    );
    out.push_str("## Top level\n\n");
    table(&mut out, &schema);
    for (name, def) in &defs {
        if let Some(variants) = def.get("oneOf").and_then(Value::as_array) {
            let tagged: Vec<&Value> = variants.iter().filter(|v| tag_of(v).is_some()).collect();
            if tagged.len() == variants.len() {
                let (key, _) = tag_of(tagged[0]).expect("checked");
                let _ = writeln!(out, "## `{name}`\n\n{}\n", text(def));
                let _ = writeln!(out, "Chosen by `{key}`:\n");
                for v in tagged {
                    let (key, tag) = tag_of(v).expect("checked");
                    let _ = writeln!(out, "### `{key}: {tag}`\n\n{}\n", text(v));
                    table(&mut out, v);
                }
                continue;
            }
        }
        let _ = writeln!(out, "## `{name}`\n\n{}\n", text(def));
        if def.get("properties").is_some() {
            table(&mut out, def);
        } else if let Some(values) = enum_values(def) {
            let _ = writeln!(out, "One of: {}.\n", values.join(", "));
            if let Some(alts) = def.get("oneOf").and_then(Value::as_array) {
                for a in alts {
                    if let Some(c) = a.get("const").and_then(Value::as_str) {
                        let _ = writeln!(out, "* `{c}` — {}", text(a).replace('\n', " "));
                    }
                }
                out.push('\n');
            }
        } else if let Some(alts) = def.get("anyOf").and_then(Value::as_array) {
            for a in alts {
                let _ = writeln!(out, "* {} — {}", type_name(a), text(a).replace('\n', " "));
            }
            out.push('\n');
        }
    }
    out
}

/// The discriminating key and value of a tagged variant (`type: parquet`, `op: word_swap`).
fn tag_of(v: &Value) -> Option<(&str, &str)> {
    let props = v.get("properties")?.as_object()?;
    props.iter().find_map(|(k, p)| {
        p.get("const")
            .and_then(Value::as_str)
            .map(|c| (k.as_str(), c))
    })
}

fn enum_values(def: &Value) -> Option<Vec<String>> {
    if let Some(e) = def.get("enum").and_then(Value::as_array) {
        return Some(
            e.iter()
                .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
                .collect(),
        );
    }
    let alts = def.get("oneOf")?.as_array()?;
    alts.iter()
        .map(|a| {
            a.get("const")
                .and_then(Value::as_str)
                .map(|c| format!("`{c}`"))
        })
        .collect()
}

fn text(v: &Value) -> String {
    v.get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn table(out: &mut String, obj: &Value) {
    let Some(props) = obj.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("| key | type | default | description |\n|---|---|---|---|\n");
    for (key, p) in props {
        if p.get("const").is_some() {
            continue;
        }
        let default = if required.contains(&key.as_str()) {
            "required".to_string()
        } else {
            match p.get("default") {
                Some(Value::Null) | None => "—".to_string(),
                Some(d) => format!("`{}`", serde_json::to_string(d).unwrap_or_default()),
            }
        };
        let _ = writeln!(
            out,
            "| `{key}` | {} | {default} | {} |",
            type_name(p),
            text(p).replace('\n', " ").replace('|', "\\|")
        );
    }
    out.push('\n');
}

fn type_name(p: &Value) -> String {
    if let Some(r) = p.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("[`{name}`](#{})", name.to_lowercase());
    }
    if let Some(any) = p.get("anyOf").and_then(Value::as_array) {
        let parts: Vec<String> = any
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
            .map(type_name)
            .collect();
        return parts.join(" or ");
    }
    if let Some(one) = p.get("oneOf").and_then(Value::as_array) {
        let parts: Vec<String> = one.iter().map(type_name).collect();
        return parts.join(" or ");
    }
    if let Some(c) = p.get("const") {
        return format!("`{c}`");
    }
    let ty = match p.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| *s != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_string(),
    };
    match ty.as_str() {
        "array" => match p.get("items") {
            Some(items) if items.is_object() => format!("list of {}", type_name(items)),
            Some(Value::Array(items)) => format!(
                "[{}]",
                items.iter().map(type_name).collect::<Vec<_>>().join(", ")
            ),
            _ => "list".to_string(),
        },
        "object" => match p.get("additionalProperties") {
            Some(v) if v.is_object() => format!("map of {}", type_name(v)),
            _ => "mapping".to_string(),
        },
        other => other.to_string(),
    }
}
