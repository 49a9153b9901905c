//! `--format`: a small evaluator of Go-template-like text over `serde_json::Value`.
//!
//! Docker's `--format` is Go's text/template. No Rust crate evaluates Go templates over JSON
//! values with Go's printing rules (tera, handlebars and minijinja have their own syntax and
//! print lists and objects differently), and Swarm users paste docker's templates, so this is
//! the subset they use:
//! - fields: `{{.}}`, `{{.Spec.Name}}`; a missing field is an error that lists the fields;
//! - functions: `json`, `join LIST SEP`, `index X KEY...`, `upper`, `lower`, `title`, `len`,
//!   `truncate X N`, and pipelines `{{.Spec.Labels | json}}`;
//! - `{{-` and `-}}` trim the whitespace next to them;
//! - values print like Go's `fmt`: lists `[a b]`, structs `{v1 v2}` in field order (objects
//!   whose keys all start upper-case), maps `map[k:v]` sorted by key, null `<nil>`.
//!
//! No `if`/`range`: use `{{json ...}}` and jq for more.

use serde_json::Value;

/// A `--format` value, parsed.
#[derive(Debug, Clone)]
pub enum Format {
    /// No `--format`, or `--format table`: the command's own table (or JSON for inspect).
    Default,
    /// `--format json`: one JSON object per line.
    Json,
    /// A template; `table` when it began with `table `: cells split at tabs, with a header.
    Template { table: bool, template: Template },
}

impl Format {
    pub fn parse(s: Option<&str>) -> Result<Format, String> {
        let Some(s) = s else {
            return Ok(Format::Default);
        };
        let s = s.replace("\\t", "\t").replace("\\n", "\n");
        match s.trim() {
            "" | "table" => return Ok(Format::Default),
            "json" => return Ok(Format::Json),
            _ => {}
        }
        match s
            .strip_prefix("table ")
            .or_else(|| s.strip_prefix("table\t"))
        {
            Some(rest) => Ok(Format::Template {
                table: true,
                template: Template::parse(rest)?,
            }),
            None => Ok(Format::Template {
                table: false,
                template: Template::parse(&s)?,
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// Stages separated by `|`; each stage's result is the last argument of the next.
    Action(Vec<Call>),
}

#[derive(Debug, Clone, PartialEq)]
struct Call {
    func: Option<String>,
    args: Vec<Arg>,
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    /// `.A.B` as ["A", "B"]; `.` as [].
    Field(Vec<String>),
    Str(String),
    Int(i64),
}

const FUNCS: &str = "json, join, index, upper, lower, title, len, truncate";

impl Template {
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = src;
        while let Some(start) = rest.find("{{") {
            let mut text = rest[..start].to_string();
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| {
                format!("template: unclosed action {:?}: add }}}}", &rest[start..])
            })?;
            let mut inner = &after[..end];
            rest = &after[end + 2..];
            if let Some(i) = inner.strip_prefix('-') {
                inner = i;
                text.truncate(text.trim_end().len());
            }
            if let Some(i) = inner.strip_suffix('-') {
                inner = i;
                rest = rest.trim_start();
            }
            if !text.is_empty() {
                parts.push(Part::Text(text));
            }
            parts.push(Part::Action(parse_action(inner)?));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    pub fn render(&self, data: &Value) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Action(stages) => {
                    let mut piped: Option<Value> = None;
                    for call in stages {
                        piped = Some(eval(call, data, piped)?);
                    }
                    out.push_str(&go_fmt(&piped.unwrap_or(Value::Null)));
                }
            }
        }
        Ok(out)
    }
}

fn parse_action(src: &str) -> Result<Vec<Call>, String> {
    let tokens = tokenize(src)?;
    let mut stages = Vec::new();
    for stage in tokens.split(|t| t == "|") {
        let Some((first, rest)) = stage.split_first() else {
            return Err(format!("template: empty command in {{{{{src}}}}}"));
        };
        let call = if first.starts_with('.') || first.starts_with('"') || first.starts_with('`') {
            if !rest.is_empty() || !stages.is_empty() {
                return Err(format!(
                    "template: {first} is not a function in {{{{{src}}}}}; functions are {FUNCS}"
                ));
            }
            Call {
                func: None,
                args: vec![parse_arg(first)?],
            }
        } else {
            if !FUNCS.split(", ").any(|f| f == first) {
                return Err(format!(
                    "template: unknown function {first:?}; use one of {FUNCS}"
                ));
            }
            let args = rest
                .iter()
                .map(|t| parse_arg(t))
                .collect::<Result<_, _>>()?;
            Call {
                func: Some(first.clone()),
                args,
            }
        };
        stages.push(call);
    }
    Ok(stages)
}

fn tokenize(src: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '|' {
            chars.next();
            tokens.push("|".to_string());
        } else if c == '"' || c == '`' {
            chars.next();
            let mut tok = c.to_string();
            let mut closed = false;
            while let Some(ch) = chars.next() {
                if ch == '\\' && c == '"' {
                    tok.push(ch);
                    if let Some(n) = chars.next() {
                        tok.push(n);
                    }
                } else if ch == c {
                    closed = true;
                    break;
                } else {
                    tok.push(ch);
                }
            }
            if !closed {
                return Err(format!("template: unterminated string in {{{{{src}}}}}"));
            }
            tokens.push(tok);
        } else {
            let mut tok = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || ch == '|' {
                    break;
                }
                tok.push(ch);
                chars.next();
            }
            tokens.push(tok);
        }
    }
    Ok(tokens)
}

/// Parses one token; strings arrive with their opening quote (and no closing one).
fn parse_arg(tok: &str) -> Result<Arg, String> {
    if let Some(s) = tok.strip_prefix('`') {
        return Ok(Arg::Str(s.to_string()));
    }
    if let Some(s) = tok.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(o) => out.push(o),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        return Ok(Arg::Str(out));
    }
    if tok == "." {
        return Ok(Arg::Field(Vec::new()));
    }
    if let Some(path) = tok.strip_prefix('.') {
        let fields: Vec<String> = path.split('.').map(str::to_string).collect();
        if fields.iter().any(|f| f.is_empty()) {
            return Err(format!("template: bad field path {tok:?}"));
        }
        return Ok(Arg::Field(fields));
    }
    tok.parse::<i64>().map(Arg::Int).map_err(|_| {
        format!("template: can't use {tok:?} here: expected .Field, \"string\" or a number")
    })
}

fn lookup(data: &Value, path: &[String]) -> Result<Value, String> {
    let mut cur = data;
    for (i, name) in path.iter().enumerate() {
        let at = if i == 0 {
            ".".to_string()
        } else {
            format!(".{}", path[..i].join("."))
        };
        cur = match cur {
            Value::Object(map) => map.get(name).ok_or_else(|| {
                let fields: Vec<&str> = map.keys().map(String::as_str).collect();
                format!(
                    "template: no field {name:?} in {at}; it has {}",
                    fields.join(", ")
                )
            })?,
            other => {
                return Err(format!(
                    "template: can't read field {name:?} of {} {at}",
                    kind(other)
                ));
            }
        };
    }
    Ok(cur.clone())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "the boolean",
        Value::Number(_) => "the number",
        Value::String(_) => "the string",
        Value::Array(_) => "the list",
        Value::Object(_) => "the object",
    }
}

fn eval(call: &Call, data: &Value, piped: Option<Value>) -> Result<Value, String> {
    let mut args = call
        .args
        .iter()
        .map(|a| match a {
            Arg::Field(path) => lookup(data, path),
            Arg::Str(s) => Ok(Value::String(s.clone())),
            Arg::Int(n) => Ok(Value::from(*n)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    args.extend(piped);
    let Some(func) = &call.func else {
        return Ok(args.pop().unwrap_or(Value::Null));
    };
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "template: {func} takes {n} argument(s), got {}",
                args.len()
            ))
        }
    };
    let text = |v: &Value| go_fmt(v);
    Ok(match func.as_str() {
        "json" => {
            arity(1)?;
            Value::String(serde_json::to_string(&args[0]).map_err(|e| e.to_string())?)
        }
        "upper" => {
            arity(1)?;
            Value::String(text(&args[0]).to_uppercase())
        }
        "lower" => {
            arity(1)?;
            Value::String(text(&args[0]).to_lowercase())
        }
        "title" => {
            arity(1)?;
            let s = text(&args[0]);
            let mut c = s.chars();
            Value::String(
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default(),
            )
        }
        "len" => {
            arity(1)?;
            Value::from(match &args[0] {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::String(s) => s.chars().count(),
                other => return Err(format!("template: len of {}", kind(other))),
            })
        }
        "join" => {
            arity(2)?;
            let Value::Array(items) = &args[0] else {
                return Err(format!(
                    "template: join needs a list, got {}",
                    kind(&args[0])
                ));
            };
            Value::String(
                items
                    .iter()
                    .map(text)
                    .collect::<Vec<_>>()
                    .join(&text(&args[1])),
            )
        }
        "truncate" => {
            arity(2)?;
            let n = args[1]
                .as_u64()
                .ok_or("template: truncate X N needs a number N")? as usize;
            Value::String(text(&args[0]).chars().take(n).collect())
        }
        "index" => {
            let (first, keys) = args
                .split_first()
                .ok_or("template: index needs arguments")?;
            let mut cur = first.clone();
            for key in keys {
                cur = match (&cur, key) {
                    (Value::Object(m), Value::String(k)) => {
                        m.get(k).cloned().unwrap_or(Value::Null)
                    }
                    (Value::Array(a), Value::Number(n)) => n
                        .as_u64()
                        .and_then(|i| a.get(i as usize))
                        .cloned()
                        .ok_or_else(|| format!("template: index {n} out of range"))?,
                    (c, k) => {
                        return Err(format!(
                            "template: can't index {} with {}",
                            kind(c),
                            text(k)
                        ));
                    }
                };
            }
            cur
        }
        other => {
            return Err(format!(
                "template: unknown function {other:?}; use one of {FUNCS}"
            ));
        }
    })
}

/// Prints a value as Go's `fmt.Sprint` prints docker's objects.
pub fn go_fmt(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_fmt).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(map) => {
            let is_struct = !map.is_empty()
                && map
                    .keys()
                    .all(|k| k.starts_with(|c: char| c.is_ascii_uppercase()));
            if is_struct {
                format!(
                    "{{{}}}",
                    map.values().map(go_fmt).collect::<Vec<_>>().join(" ")
                )
            } else {
                let mut pairs: Vec<_> = map
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", go_fmt(v)))
                    .collect();
                pairs.sort();
                format!("map[{}]", pairs.join(" "))
            }
        }
    }
}

/// JSON indented by four spaces, as `docker inspect` prints it.
pub fn pretty_json(v: &impl serde::Serialize) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    match v.serialize(&mut ser) {
        Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
        Err(e) => format!("failed to render JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(t: &str, data: &Value) -> Result<String, String> {
        Template::parse(t)?.render(data)
    }

    fn service() -> Value {
        json!({
            "ID": "abc",
            "Spec": {"Name": "vote", "Labels": {"tier": "front", "app": "v"}, "Mode": {"Replicated": {"Replicas": 2}}},
            "Endpoint": {"VirtualIPs": [{"NetworkID": "id", "Addr": "10.0.0.9/24"}]},
            "Args": ["a", "b"],
            "Empty": {},
            "Nothing": null,
        })
    }

    #[test]
    fn fields_and_text() {
        let s = service();
        assert_eq!(render("{{.Spec.Name}}", &s).unwrap(), "vote");
        assert_eq!(
            render("name={{.Spec.Name}} id={{ .ID }}!", &s).unwrap(),
            "name=vote id=abc!"
        );
        assert_eq!(render("no actions", &s).unwrap(), "no actions");
        assert_eq!(
            render("{{.Spec.Mode.Replicated.Replicas}}", &s).unwrap(),
            "2"
        );
    }

    #[test]
    fn values_print_like_go() {
        let s = service();
        assert_eq!(
            render("{{.Endpoint.VirtualIPs}}", &s).unwrap(),
            "[{id 10.0.0.9/24}]"
        );
        assert_eq!(
            render("{{.Spec.Labels}}", &s).unwrap(),
            "map[app:v tier:front]"
        );
        assert_eq!(render("{{.Args}}", &s).unwrap(), "[a b]");
        assert_eq!(
            render("{{.Empty}} {{.Nothing}}", &s).unwrap(),
            "map[] <nil>"
        );
    }

    #[test]
    fn functions() {
        let s = service();
        assert_eq!(
            render("{{json .Spec.Labels}}", &s).unwrap(),
            r#"{"tier":"front","app":"v"}"#
        );
        assert_eq!(
            render("{{json .Endpoint}}", &s).unwrap(),
            r#"{"VirtualIPs":[{"NetworkID":"id","Addr":"10.0.0.9/24"}]}"#
        );
        assert_eq!(
            render("{{.Spec.Labels | json}}", &s).unwrap(),
            r#"{"tier":"front","app":"v"}"#
        );
        assert_eq!(render(r#"{{join .Args ","}}"#, &s).unwrap(), "a,b");
        assert_eq!(
            render(r#"{{index .Spec.Labels "tier"}}"#, &s).unwrap(),
            "front"
        );
        assert_eq!(render("{{index .Args 1}}", &s).unwrap(), "b");
        assert_eq!(
            render("{{upper .Spec.Name}} {{.Spec.Name | title}}", &s).unwrap(),
            "VOTE Vote"
        );
        assert_eq!(render("{{len .Args}}", &s).unwrap(), "2");
        assert_eq!(render("{{truncate .Spec.Name 2}}", &s).unwrap(), "vo");
        assert!(
            render("{{json .}}", &s)
                .unwrap()
                .starts_with(r#"{"ID":"abc","Spec":"#)
        );
    }

    #[test]
    fn trim_markers() {
        let s = service();
        assert_eq!(render("a  {{- .ID -}}  b", &s).unwrap(), "aabcb");
    }

    #[test]
    fn errors_say_what_to_do() {
        let s = service();
        assert_eq!(
            render("{{.Spec.Nme}}", &s).unwrap_err(),
            "template: no field \"Nme\" in .Spec; it has Name, Labels, Mode"
        );
        assert_eq!(
            render("{{.ID.X}}", &s).unwrap_err(),
            "template: can't read field \"X\" of the string .ID"
        );
        assert!(render("{{.ID", &s).unwrap_err().contains("unclosed action"));
        assert!(
            render("{{frob .ID}}", &s)
                .unwrap_err()
                .contains("unknown function \"frob\"")
        );
        assert!(
            render("{{join .ID \",\"}}", &s)
                .unwrap_err()
                .contains("join needs a list")
        );
        assert!(
            render("{{json}}", &s)
                .unwrap_err()
                .contains("json takes 1 argument")
        );
    }

    #[test]
    fn format_kinds() {
        assert!(matches!(Format::parse(None), Ok(Format::Default)));
        assert!(matches!(Format::parse(Some("table")), Ok(Format::Default)));
        assert!(matches!(Format::parse(Some("json")), Ok(Format::Json)));
        let Ok(Format::Template {
            table: true,
            template,
        }) = Format::parse(Some(r"table {{.ID}}\t{{.Name}}"))
        else {
            panic!("not a table template")
        };
        assert_eq!(
            template.render(&json!({"ID": "1", "Name": "n"})).unwrap(),
            "1\tn"
        );
        assert!(matches!(
            Format::parse(Some("{{.ID}}")),
            Ok(Format::Template { table: false, .. })
        ));
    }

    #[test]
    fn pretty_json_indents_like_docker() {
        assert_eq!(
            pretty_json(&json!([{"ID": "a"}])),
            "[\n    {\n        \"ID\": \"a\"\n    }\n]"
        );
    }
}
