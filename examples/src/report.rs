//! A self-contained HTML report: sections with text, tables and inline SVG charts.
//!
//! A teacher wants one file that opens anywhere, offline, on a laptop and on paper. So the
//! report is a single HTML document with everything inside it: charts are inlined as SVG
//! (no image files), the style sheet is inline (with a print layout), the only script is a
//! few lines that show or hide the extra plots and open them all before printing, and
//! nothing is fetched — no fonts, scripts, styles or images from elsewhere.
//! [`external_references`] finds anything that would break that promise; the report's
//! tests and CI use it.
//!
//! Text handed to [`Section::para`], [`Section::table`] and figure captions is escaped;
//! [`Section::html`] takes trusted markup written by the program itself (equations,
//! lists).

use crate::plot::Chart;
use crate::{Error, Result};
use std::fmt::Write as _;
use std::path::Path;

/// Escapes text for HTML element content and double-quoted attribute values (the same
/// escaping as the charts' SVG text; control characters other than tab and newline are
/// dropped).
pub fn escape(s: &str) -> String {
    crate::plot::xml_escape(s)
}

/// An SVG document prepared for inlining in HTML: the XML prolog and the `xmlns`
/// declaration (an `http:` URI an HTML parser does not need) are removed, and the chart
/// gets `role="img"` so screen readers announce it.
pub fn inline_svg(svg: &str) -> String {
    let body = match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    };
    body.replacen(r#" xmlns="http://www.w3.org/2000/svg""#, "", 1)
        .replacen("<svg", r#"<svg role="img""#, 1)
}

/// One piece of a section's body.
#[derive(Clone, Debug, PartialEq)]
enum Block {
    /// Trusted markup.
    Html(String),
    /// An inline chart and its caption (escaped).
    Figure { svg: String, caption: String },
    /// Blocks hidden behind a toggle until opened ("more plots").
    Extra { summary: String, blocks: Vec<Block> },
}

/// One numbered part of the report, reachable at `#id`.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    /// Anchor (`id` attribute); letters, digits and `-` only.
    pub id: String,
    /// Heading.
    pub title: String,
    blocks: Vec<Block>,
}

impl Section {
    /// An empty section with anchor `id` and heading `title`.
    pub fn new(id: impl Into<String>, title: impl Into<String>) -> Section {
        Section {
            id: id.into(),
            title: title.into(),
            blocks: Vec::new(),
        }
    }

    /// A paragraph of plain text.
    pub fn para(mut self, text: &str) -> Section {
        self.blocks.push(Block::Html(format!("<p>{}</p>", escape(text))));
        self
    }

    /// Trusted markup written by the program (not escaped).
    pub fn html(mut self, markup: impl Into<String>) -> Section {
        self.blocks.push(Block::Html(markup.into()));
        self
    }

    /// A table of plain-text cells with a header row.
    pub fn table(mut self, header: &[&str], rows: &[Vec<String>]) -> Section {
        self.blocks.push(Block::Html(table_html(header, rows)));
        self
    }

    /// A chart inlined as SVG, with a caption saying what to look at.
    pub fn figure(mut self, chart: &dyn Chart, caption: &str) -> Section {
        self.blocks.push(figure_block(chart, caption));
        self
    }

    /// Charts shown only when the reader opens them (and always in print).
    pub fn extra_figures(mut self, summary: &str, charts: &[(&dyn Chart, &str)]) -> Section {
        if !charts.is_empty() {
            self.blocks.push(Block::Extra {
                summary: summary.to_string(),
                blocks: charts.iter().map(|&(c, cap)| figure_block(c, cap)).collect(),
            });
        }
        self
    }

    /// Number of inline charts (shown and extra).
    pub fn figures(&self) -> usize {
        fn count(b: &[Block]) -> usize {
            b.iter()
                .map(|b| match b {
                    Block::Figure { .. } => 1,
                    Block::Extra { blocks, .. } => count(blocks),
                    Block::Html(_) => 0,
                })
                .sum()
        }
        count(&self.blocks)
    }
}

fn figure_block(chart: &dyn Chart, caption: &str) -> Block {
    Block::Figure {
        svg: inline_svg(&chart.svg()),
        caption: caption.to_string(),
    }
}

fn table_html(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<div class=\"tw\"><table><thead><tr>");
    for h in header {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{}</td>", escape(c));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table></div>");
    s
}

fn render_blocks(out: &mut String, blocks: &[Block]) {
    for b in blocks {
        match b {
            Block::Html(h) => {
                out.push_str(h);
                out.push('\n');
            }
            Block::Figure { svg, caption } => {
                let _ = writeln!(
                    out,
                    "<figure>{svg}<figcaption>{}</figcaption></figure>",
                    escape(caption)
                );
            }
            Block::Extra { summary, blocks } => {
                let _ = writeln!(out, "<details class=\"extra\"><summary>{}</summary>", escape(summary));
                render_blocks(out, blocks);
                out.push_str("</details>\n");
            }
        }
    }
}

/// Layout for screens (a readable column, charts scaled to fit) and for print (no
/// navigation or buttons, charts kept whole on a page).
const STYLE: &str = r#"
:root { --fg: #1b1b1b; --muted: #555; --rule: #d8d8d8; --accent: #1f5fa8; --bg2: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 60rem; margin: 0 auto; padding: 1.5rem 1.25rem 4rem; }
h1 { font-size: 1.8rem; margin: 0.5rem 0 0.25rem; }
h2 { font-size: 1.35rem; margin: 2.5rem 0 0.5rem; padding-top: 0.5rem; border-top: 2px solid var(--rule); }
h3 { font-size: 1.05rem; margin: 1.25rem 0 0.4rem; }
p, li { max-width: 52rem; }
.lead { color: var(--muted); }
nav.toc { background: var(--bg2); border: 1px solid var(--rule); border-radius: 6px; padding: 0.6rem 1rem; margin: 1rem 0; }
nav.toc ul { margin: 0.2rem 0; padding-left: 0.2rem; list-style: none; }
nav.toc a { color: var(--accent); text-decoration: none; }
.buttons { margin: 0.5rem 0; }
button { font: inherit; font-size: 0.9rem; padding: 0.25rem 0.7rem; border: 1px solid var(--rule); border-radius: 4px; background: #fff; cursor: pointer; }
figure { margin: 1rem 0 1.5rem; }
figure svg { display: block; width: 100%; height: auto; max-width: 52rem; border: 1px solid var(--rule); border-radius: 4px; background: #fff; }
figcaption { margin-top: 0.4rem; font-size: 0.95rem; color: #333; max-width: 52rem; }
.tw { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.75rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid var(--rule); padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
th { background: var(--bg2); }
td:first-child { white-space: nowrap; }
td code, p code, li code { font-size: 0.88em; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
.eq { font-family: "DejaVu Serif", "Cambria Math", "STIX Two Math", serif; white-space: nowrap; }
pre { background: var(--bg2); border: 1px solid var(--rule); border-radius: 4px; padding: 0.6rem 0.8rem; overflow-x: auto; font-size: 0.85rem; }
details.extra { margin: 0.5rem 0 1rem; }
details.extra > summary { cursor: pointer; color: var(--accent); }
.num { font-variant-numeric: tabular-nums; }
footer { margin-top: 3rem; color: var(--muted); font-size: 0.85rem; }
@media (max-width: 40rem) { body { font-size: 15px; } main { padding: 1rem 0.6rem 3rem; } }
@media print {
  @page { margin: 15mm; }
  body { font-size: 10.5pt; }
  main { max-width: none; padding: 0; }
  nav.toc, .buttons, details.extra > summary { display: none; }
  h2 { break-before: page; border-top: none; margin-top: 0; }
  h2.first { break-before: auto; }
  figure, pre, tr { break-inside: avoid; }
  pre { font-size: 7.5pt; white-space: pre-wrap; }
  figure svg { max-width: 100%; border: none; }
  a { color: inherit; text-decoration: none; }
}
"#;

/// Toggles for the extra plots, and every extra plot opened before printing.
const SCRIPT: &str = r#"
function setExtras(open) { document.querySelectorAll('details.extra').forEach(function (d) { d.open = open; }); }
window.addEventListener('beforeprint', function () { setExtras(true); });
"#;

/// A whole report: title, introduction, sections in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Document title and top heading.
    pub title: String,
    intro: Vec<Block>,
    /// The sections, in reading order.
    pub sections: Vec<Section>,
    footer: String,
}

impl Report {
    /// An empty report titled `title`.
    pub fn new(title: impl Into<String>) -> Report {
        Report {
            title: title.into(),
            intro: Vec::new(),
            sections: Vec::new(),
            footer: String::new(),
        }
    }

    /// A plain-text paragraph before the table of contents.
    pub fn intro(mut self, text: &str) -> Report {
        self.intro
            .push(Block::Html(format!("<p class=\"lead\">{}</p>", escape(text))));
        self
    }

    /// A plain-text line at the bottom of the page.
    pub fn footer(mut self, text: &str) -> Report {
        self.footer = text.to_string();
        self
    }

    /// Append a section.
    pub fn section(mut self, s: Section) -> Report {
        self.sections.push(s);
        self
    }

    /// The whole document.
    pub fn to_html(&self) -> String {
        let mut s = String::with_capacity(1 << 16);
        let _ = write!(
            s,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>{}</h1>\n",
            escape(&self.title),
            escape(&self.title)
        );
        render_blocks(&mut s, &self.intro);
        s.push_str("<nav class=\"toc\"><strong>Contents</strong><ul>\n");
        for sec in &self.sections {
            let _ = writeln!(
                s,
                "<li><a href=\"#{}\">{}</a></li>",
                escape(&sec.id),
                escape(&sec.title)
            );
        }
        s.push_str("</ul></nav>\n");
        if self
            .sections
            .iter()
            .any(|sec| sec.blocks.iter().any(|b| matches!(b, Block::Extra { .. })))
        {
            s.push_str(
                "<div class=\"buttons\"><button type=\"button\" onclick=\"setExtras(true)\">Show all plots</button> \
                 <button type=\"button\" onclick=\"setExtras(false)\">Hide extra plots</button></div>\n",
            );
        }
        for (i, sec) in self.sections.iter().enumerate() {
            let class = if i == 0 { " class=\"first\"" } else { "" };
            let _ = writeln!(
                s,
                "<section id=\"{}\">\n<h2{class}>{}</h2>",
                escape(&sec.id),
                escape(&sec.title)
            );
            render_blocks(&mut s, &sec.blocks);
            s.push_str("</section>\n");
        }
        if !self.footer.is_empty() {
            let _ = writeln!(s, "<footer>{}</footer>", escape(&self.footer));
        }
        let _ = write!(s, "</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n");
        s
    }

    /// Write the document to `path` (parent folders are created).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(path, self.to_html()).map_err(|e| Error::io(path, e))
    }
}

/// Everything in `html` that points outside the document: `http:`/`https:` URIs anywhere,
/// `src=`, `href=`, `xlink:href=` and `action=` values other than `#anchor` or `data:`,
/// CSS `url(...)` other than `data:`, and `@import`. Empty for a self-contained page.
pub fn external_references(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    let snippet = |i: usize| html[i..].chars().take(60).collect::<String>();
    for pat in ["http:", "https:", "@import", "//cdn", "file:"] {
        found.extend(lower.match_indices(pat).map(|(i, _)| snippet(i)));
    }
    for attr in ["src", "href", "action", "srcset", "poster"] {
        let needle = format!("{attr}=");
        for (i, _) in lower.match_indices(&needle) {
            // only attributes: preceded by whitespace (or `:` for xlink:href)
            let before = lower[..i].chars().next_back();
            if !matches!(before, Some(c) if c.is_whitespace() || c == ':') {
                continue;
            }
            let rest = lower[i + needle.len()..].trim_start_matches(['"', '\'', ' ']);
            if !(rest.starts_with('#') || rest.starts_with("data:")) {
                found.push(snippet(i));
            }
        }
    }
    for (i, _) in lower.match_indices("url(") {
        let rest = lower[i + 4..].trim_start_matches(['"', '\'', ' ']);
        if !rest.starts_with("data:") && !rest.starts_with('#') {
            found.push(snippet(i));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::LineChart;

    fn chart() -> LineChart {
        LineChart::new("Loss <a & b>", "step", "loss").with_series("ln", vec![(1.0, 2.0), (2.0, 1.5)])
    }

    fn sample() -> Report {
        Report::new("Norms & more")
            .intro("What <this> is.")
            .section(
                Section::new("family", "The family")
                    .para("LN uses 'per-token' statistics & BN <batch> ones.")
                    .table(&["norm", "over"], &[vec!["LN".into(), "C <channels>".into()]])
                    .figure(&chart(), "Look at the <gap>."),
            )
            .section(
                Section::new("stats", "Statistics")
                    .html("<p class=\"eq\">y = x / √(v + ε)</p>")
                    .extra_figures("More plots", &[(&chart() as &dyn Chart, "extra one")]),
            )
            .footer("made by a test")
    }

    #[test]
    fn escapes_text_but_keeps_trusted_markup() {
        assert_eq!(escape(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&apos;");
        let html = sample().to_html();
        assert!(html.contains("What &lt;this&gt; is."));
        assert!(html.contains("&apos;per-token&apos; statistics &amp; BN &lt;batch&gt; ones."));
        assert!(html.contains("<td>C &lt;channels&gt;</td>"));
        assert!(html.contains("<figcaption>Look at the &lt;gap&gt;.</figcaption>"));
        assert!(html.contains("<p class=\"eq\">y = x / √(v + ε)</p>"));
        assert!(html.contains("<title>Norms &amp; more</title>"));
    }

    #[test]
    fn sections_are_anchored_listed_and_in_order() {
        let r = sample();
        let html = r.to_html();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        let fam = html.find("<section id=\"family\">").expect("family section");
        let st = html.find("<section id=\"stats\">").expect("stats section");
        assert!(fam < st);
        assert!(html.contains("<a href=\"#family\">The family</a>"));
        assert!(html.contains("<a href=\"#stats\">Statistics</a>"));
        assert_eq!(r.sections[0].figures(), 1);
        assert_eq!(r.sections[1].figures(), 1);
        assert_eq!(html.matches("<svg role=\"img\"").count(), 2);
        assert!(html.contains("<details class=\"extra\"><summary>More plots</summary>"));
        assert!(html.contains("@media print"));
        assert!(html.contains("<footer>made by a test</footer>"));
    }

    #[test]
    fn report_is_self_contained() {
        let html = sample().to_html();
        assert_eq!(external_references(&html), Vec::<String>::new());
        // the chart on its own declares the SVG namespace; inlining drops it
        assert!(chart().to_svg().contains("http://www.w3.org/2000/svg"));
        let inl = inline_svg(&chart().to_svg());
        assert!(inl.starts_with("<svg role=\"img\""));
        assert!(!inl.contains("http"));
    }

    #[test]
    fn external_references_are_found() {
        let cases = [
            r#"<img src="a.png">"#,
            r#"<link rel="stylesheet" href="style.css">"#,
            r#"<script src='x.js'></script>"#,
            r#"<a href="https://example.org">x</a>"#,
            r#"<style>@import "x.css";</style>"#,
            r#"<style>body { background: url(bg.png) }</style>"#,
            r#"<use xlink:href="other.svg#a"/>"#,
            "see http://example.org",
        ];
        for c in cases {
            assert!(!external_references(c).is_empty(), "{c}");
        }
        let fine = [
            r##"<a href="#stats">x</a>"##,
            r#"<img src="data:image/png;base64,AAAA">"#,
            r#"<style>x { background: url("data:image/svg+xml,AA") }</style>"#,
            r#"<p data-src="x">class names like thumbsrc=1 are text</p>"#,
        ];
        for c in fine {
            assert_eq!(external_references(c), Vec::<String>::new(), "{c}");
        }
    }

    #[test]
    fn save_writes_the_document() {
        let dir = std::env::temp_dir().join(format!("unigrad-report-{}", std::process::id()));
        let path = dir.join("sub").join("r.html");
        sample().save(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), sample().to_html());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
