//! docker's tables: upper-case headers, left-aligned cells, three spaces between columns, no
//! borders, no trailing spaces. And the glue that prints a list under any `--format`.

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use serde_json::{Map, Value};

use crate::format::{Format, go_fmt};

/// Renders rows under headers, docker style. Ends without a newline.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table.set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(headers.to_vec());
    for row in rows {
        table.add_row(row.clone());
    }
    let last = headers.len().saturating_sub(1);
    for (i, col) in table.column_iter_mut().enumerate() {
        col.set_padding((0, if i == last { 0 } else { 3 }));
        col.set_cell_alignment(CellAlignment::Left);
    }
    table
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One object per row: what `--format` templates and `--format json` see. Its keys are
/// docker's (`ID`, `Name`, `Replicas`, ...).
pub type Row = Map<String, Value>;

/// How a list command prints its rows by default.
pub struct Columns<'a> {
    pub headers: &'a [&'a str],
    pub cells: &'a dyn Fn(&Row) -> Vec<String>,
}

/// Prints rows under `format`: the default table, one JSON object per line, or a template
/// per row (with a header row when the template began with `table`).
pub fn list(
    rows: &[Row],
    keys: &[&str],
    columns: Columns<'_>,
    format: &Format,
) -> Result<String, String> {
    let mut out = match format {
        Format::Default => render(
            columns.headers,
            &rows.iter().map(columns.cells).collect::<Vec<_>>(),
        ),
        Format::Json => rows
            .iter()
            .map(|r| serde_json::to_string(r).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?
            .join("\n"),
        Format::Template {
            table: false,
            template,
        } => rows
            .iter()
            .map(|r| template.render(&Value::Object(r.clone())))
            .collect::<Result<Vec<_>, _>>()?
            .join("\n"),
        Format::Template {
            table: true,
            template,
        } => {
            let header: Row = keys
                .iter()
                .map(|k| (k.to_string(), Value::String(header_of(k))))
                .collect();
            let headers = template.render(&Value::Object(header))?;
            let headers: Vec<&str> = headers.split('\t').collect();
            let cells = rows
                .iter()
                .map(|r| {
                    Ok(template
                        .render(&Value::Object(r.clone()))?
                        .split('\t')
                        .map(str::to_string)
                        .collect())
                })
                .collect::<Result<Vec<Vec<String>>, String>>()?;
            render(&headers, &cells)
        }
    };
    if !out.is_empty() {
        out.push('\n');
    }
    Ok(out)
}

/// `CurrentState` -> `CURRENT STATE`, `ID` -> `ID`: the header docker prints for a field.
pub fn header_of(key: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_ascii_lowercase();
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// A cell's text for a row value: strings as they are, the rest as Go prints them.
pub fn cell(row: &Row, key: &str) -> String {
    row.get(key).map(go_fmt).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use serde_json::json;

    use super::*;

    fn rows() -> Vec<Row> {
        let r = |id: &str, name: &str, replicas: &str| {
            json!({"ID": id, "Name": name, "Replicas": replicas})
                .as_object()
                .cloned()
                .unwrap_or_default()
        };
        vec![
            r("4f2c1a9e0b1d", "vote", "2/2"),
            r("9a0b1c2d3e4f", "redis-cache", "1/1"),
        ]
    }

    fn default_cells(r: &Row) -> Vec<String> {
        vec![cell(r, "ID"), cell(r, "Name"), cell(r, "Replicas")]
    }

    fn columns() -> Columns<'static> {
        Columns {
            headers: &["ID", "NAME", "REPLICAS"],
            cells: &default_cells,
        }
    }

    #[test]
    fn docker_spacing() {
        let out = list(
            &rows(),
            &["ID", "Name", "Replicas"],
            columns(),
            &Format::Default,
        )
        .unwrap();
        expect![[r#"
            ID             NAME          REPLICAS
            4f2c1a9e0b1d   vote          2/2
            9a0b1c2d3e4f   redis-cache   1/1
        "#]]
        .assert_eq(&out);
    }

    #[test]
    fn empty_list_prints_headers() {
        let out = list(
            &[],
            &["ID", "Name", "Replicas"],
            columns(),
            &Format::Default,
        )
        .unwrap();
        expect![[r#"
            ID   NAME   REPLICAS
        "#]]
        .assert_eq(&out);
    }

    #[test]
    fn table_template_and_json() {
        let keys = ["ID", "Name", "Replicas"];
        let f = Format::parse(Some(r"table {{.Name}}\t{{.Replicas}}")).unwrap();
        expect![[r#"
            NAME          REPLICAS
            vote          2/2
            redis-cache   1/1
        "#]]
        .assert_eq(&list(&rows(), &keys, columns(), &f).unwrap());
        let f = Format::parse(Some("{{.Name}}: {{.Replicas}}")).unwrap();
        expect![[r#"
            vote: 2/2
            redis-cache: 1/1
        "#]]
        .assert_eq(&list(&rows(), &keys, columns(), &f).unwrap());
        let f = Format::parse(Some("json")).unwrap();
        expect![[r#"
            {"ID":"4f2c1a9e0b1d","Name":"vote","Replicas":"2/2"}
            {"ID":"9a0b1c2d3e4f","Name":"redis-cache","Replicas":"1/1"}
        "#]]
        .assert_eq(&list(&rows(), &keys, columns(), &f).unwrap());
    }

    #[test]
    fn headers_from_keys() {
        assert_eq!(header_of("CurrentState"), "CURRENT STATE");
        assert_eq!(header_of("ID"), "ID");
        assert_eq!(header_of("ManagerStatus"), "MANAGER STATUS");
    }
}
