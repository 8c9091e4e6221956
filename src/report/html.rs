//! `report.html`: one self-contained page (inline CSS, SVG charts, PNG
//! artifacts as data URIs) that works offline from a `file://` URL.

use std::fmt::Write;
use std::path::Path;

use base64::Engine;

use super::{plot, MeasureEntry, Report, Verdict};
use crate::error::Result;
use crate::measure::Outcome;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}\
h1 span{padding:.1em .5em;border-radius:.3em;color:#fff}.pass{background:#2a7}.fail{background:#c33}.partial{background:#888}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.bad td{background:#fdd}\
section{border-top:2px solid #eee;margin-top:1.5em}.charts{display:flex;flex-wrap:wrap;gap:1em}\
figure{margin:.5em;display:inline-block;vertical-align:top}figcaption{font-size:.85em;color:#555;max-width:420px}\
img.art{image-rendering:pixelated;max-width:420px;min-width:96px}.muted{color:#777}.warn{color:#a60}";

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page; PNG artifacts are read from `dir`.
pub fn page(report: &Report, dir: &Path) -> Result<String> {
    let mut h = String::new();
    let (class, word) = match report.verdict {
        Verdict::Pass => ("pass", "PASS"),
        Verdict::Fail => ("fail", "FAIL"),
        Verdict::Partial => ("partial", "PARTIAL"),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>georob audit</title><style>{STYLE}</style></head><body>\
         <h1>georob audit <span class=\"{class}\">{word}</span></h1>\
         <p class=\"muted\">{} model(s) · {} of {} units · seed {} · georob {} · data <code>{}</code></p>",
        report.models.len(),
        report.units_done,
        report.units_total,
        report.seed,
        esc(&report.georob_version),
        esc(&report.suite.data.display().to_string()),
    );
    if !report.gates.is_empty() {
        h.push_str("<h2>Gates</h2><table><tr><th>model</th><th>gate</th><th>value</th><th>result</th></tr>");
        for g in &report.gates {
            let _ = write!(
                h,
                "<tr{}><td>{}</td><td><code>{}</code></td><td class=\"num\">{}</td><td>{}</td></tr>",
                if g.passed { "" } else { " class=\"bad\"" },
                esc(&g.model),
                esc(&g.gate),
                g.actual.map(super::number).unwrap_or_else(|| "—".into()),
                if g.passed { "pass" } else { "FAIL" }
            );
        }
        h.push_str("</table>");
    }
    if report.models.len() > 1 {
        comparison(&mut h, report);
    }
    for m in &report.models {
        let _ = write!(h, "<section><h2>{}</h2>", esc(&m.name));
        if let Some(info) = &m.model {
            let _ = write!(
                h,
                "<p class=\"muted\"><code>{}</code> · {} · {} classes · sha256 <code>{}</code> · gradients {}</p>",
                esc(&info.path.display().to_string()),
                esc(&info.backend_detail),
                info.classes,
                esc(&info.sha256),
                m.gradient
                    .map(|g| serde_json::to_value(g).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default())
                    .unwrap_or_else(|| "not taken".into())
            );
        }
        for e in &m.measures {
            measure(&mut h, e, dir);
        }
        h.push_str("</section>");
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

/// Side-by-side table of headline values.
fn comparison(h: &mut String, report: &Report) {
    h.push_str("<h2>Comparison</h2><table><tr><th>value</th>");
    for m in &report.models {
        let _ = write!(h, "<th>{}</th>", esc(&m.name));
    }
    h.push_str("</tr>");
    let rows = report.headline_rows();
    for (id, key) in rows {
        let _ = write!(h, "<tr><td>{}.{}</td>", esc(&id), esc(&key));
        for m in &report.models {
            let v = m
                .value(&id, &key)
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "—".into());
            let _ = write!(h, "<td class=\"num\">{v}</td>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

fn measure(h: &mut String, e: &MeasureEntry, dir: &Path) {
    let r = &e.result;
    let _ = write!(h, "<h3>{}</h3><table>", esc(&e.id));
    for (k, v) in &r.summary {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
            esc(k),
            super::number(*v)
        );
    }
    let c = &r.counts;
    let _ = write!(
        h,
        "<tr><td>outcomes</td><td>fooled {}, robust {}, misclassified {}, failed {}</td></tr></table>",
        c.fooled, c.robust, c.misclassified, c.failed
    );
    for w in Report::warnings(r) {
        let _ = write!(h, "<p class=\"warn\">⚠ {}</p>", esc(w));
    }
    h.push_str("<div class=\"charts\">");
    let mut charts = 0;
    let histograms = crate::measure::declaration(&r.measure).map_or(&[][..], |d| d.histograms);
    for key in histograms {
        if charts == 2 {
            break;
        }
        let values: Vec<f64> = r
            .images
            .iter()
            .filter(|i| matches!(i.outcome, Outcome::Fooled | Outcome::Robust))
            .filter_map(|i| i.values.get(key).copied())
            .collect();
        if let Some(svg) = plot::histogram(&format!("{} · {key}", e.id), &values, 20) {
            let _ = write!(h, "<figure>{svg}</figure>");
            charts += 1;
        }
    }
    // Curves: invariance flip probability against radius; eigenvalue profiles.
    let curve: Vec<(f64, f64)> = r
        .summary
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("flip_prob@")
                .and_then(|x| x.parse().ok())
                .map(|x| (x, *v))
        })
        .collect();
    if curve.len() > 1 {
        if let Some(svg) = plot::lines(
            "random transforms: flip probability",
            "geodesic radius",
            &[("flip probability".into(), curve)],
        ) {
            let _ = write!(h, "<figure>{svg}</figure>");
        }
    }
    let curves = r.extra.as_object().into_iter().flatten();
    for (name, curve) in curves.filter(|(k, _)| k.ends_with("_accuracy_curve")) {
        let name = name.trim_end_matches("_curve").replace('_', " ");
        let value = curve
            .get("value")
            .and_then(|v| v.as_str())
            .unwrap_or("budget");
        let pts: Vec<(f64, f64)> = curve
            .get("points")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
            .collect();
        // A step function: the accuracy holds until the next budget where an image falls.
        let steps: Vec<(f64, f64)> = pts
            .iter()
            .enumerate()
            .flat_map(|(i, &(x, y))| {
                let before = i.checked_sub(1).map(|j| (x, pts[j].1));
                before.into_iter().chain([(x, y)])
            })
            .collect();
        if let Some(svg) = plot::lines(
            &format!("{} · {name}", e.id),
            value,
            &[(name.clone(), steps)],
        ) {
            let _ = write!(h, "<figure>{svg}</figure>");
        }
    }
    // Line charts a measure lays out itself: `extra.charts`, each `{title, x, series: [{name,
    // points: [[x, y], ...]}]}` (corruptions: accuracy against severity).
    for chart in r.extra["charts"].as_array().into_iter().flatten() {
        let series: Vec<(String, Vec<(f64, f64)>)> = chart["series"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|line| {
                let points = line["points"].as_array().into_iter().flatten();
                let points =
                    points.filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)));
                (
                    line["name"].as_str().unwrap_or("").to_string(),
                    points.collect(),
                )
            })
            .collect();
        let title = format!("{} · {}", e.id, chart["title"].as_str().unwrap_or(""));
        if let Some(svg) = plot::lines(&title, chart["x"].as_str().unwrap_or(""), &series) {
            let _ = write!(h, "<figure>{svg}</figure>");
        }
    }
    if let Some(profile) = r.extra.get("profile").and_then(|p| p.as_array()) {
        let pts: Vec<(f64, f64)> = profile
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_f64().map(|v| ((i + 1) as f64, v)))
            .collect();
        if let Some(svg) = plot::lines(
            "curvature profile (mean eigenvalues)",
            "eigenvalue rank",
            &[("mean".into(), pts)],
        ) {
            let _ = write!(h, "<figure>{svg}</figure>");
        }
    }
    h.push_str("</div>");
    for a in &r.artifacts {
        // Only a picture inside the report's folder is embedded: the paths come from a
        // journal, which may have been edited.
        let inside = crate::write::inside(dir, std::path::Path::new(&a.path));
        if let Some(path) = inside.filter(|_| a.path.ends_with(".png")) {
            if let Ok(bytes) = crate::read::bytes(&path, crate::read::IMAGE_CAP) {
                let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                let _ = write!(
                    h,
                    "<figure><img class=\"art\" alt=\"{0}\" src=\"data:image/png;base64,{b64}\"><figcaption>{0}</figcaption></figure>",
                    esc(&a.description)
                );
                continue;
            }
        }
        let _ = write!(
            h,
            "<p class=\"muted\">{}: <code>{}</code></p>",
            esc(&a.description),
            esc(&a.path)
        );
    }
}
