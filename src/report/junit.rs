//! `junit.xml`: one test suite per model, one test case per gate (a failed
//! gate is a `<failure>`); a model without gates gets one case per
//! finished measure so CI still shows what ran.

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use super::Report;
use crate::error::{Error, Result};

/// A test case: name and, when it failed, the message.
type Case = (String, Option<String>);

/// The XML text.
pub fn document(report: &Report) -> Result<String> {
    let suites: Vec<(&str, Vec<Case>)> = report
        .models
        .iter()
        .map(|m| {
            let gates: Vec<_> = report.gates.iter().filter(|g| g.model == m.name).collect();
            let cases = if gates.is_empty() {
                m.measures
                    .iter()
                    .map(|e| (format!("{} ran", e.id), None))
                    .collect()
            } else {
                gates
                    .iter()
                    .map(|g| (g.gate.clone(), (!g.passed).then(|| g.message.clone())))
                    .collect()
            };
            (m.name.as_str(), cases)
        })
        .collect();
    let count = |f: &dyn Fn(&Case) -> bool| -> usize {
        suites
            .iter()
            .map(|s| s.1.iter().filter(|c| f(c)).count())
            .sum()
    };
    let tests = count(&|_| true);
    let failures = count(&|c| c.1.is_some());
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let err = |e: std::io::Error| Error::Config(format!("junit.xml: {e}"));
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(err)?;
    let mut root = BytesStart::new("testsuites");
    root.push_attribute(("name", "georob audit"));
    root.push_attribute(("tests", tests.to_string().as_str()));
    root.push_attribute(("failures", failures.to_string().as_str()));
    w.write_event(Event::Start(root)).map_err(err)?;
    for (model, cases) in suites {
        let class = format!("georob.{model}");
        let mut suite = BytesStart::new("testsuite");
        suite.push_attribute(("name", class.as_str()));
        suite.push_attribute(("tests", cases.len().to_string().as_str()));
        let failed = cases.iter().filter(|c| c.1.is_some()).count();
        suite.push_attribute(("failures", failed.to_string().as_str()));
        w.write_event(Event::Start(suite)).map_err(err)?;
        for (name, failure) in cases {
            let mut case = BytesStart::new("testcase");
            case.push_attribute(("classname", class.as_str()));
            case.push_attribute(("name", name.as_str()));
            match failure {
                None => w.write_event(Event::Empty(case)).map_err(err)?,
                Some(msg) => {
                    w.write_event(Event::Start(case)).map_err(err)?;
                    let mut f = BytesStart::new("failure");
                    f.push_attribute(("message", msg.as_str()));
                    f.push_attribute(("type", "georob.gate"));
                    w.write_event(Event::Start(f)).map_err(err)?;
                    w.write_event(Event::Text(BytesText::new(&msg)))
                        .map_err(err)?;
                    w.write_event(Event::End(BytesEnd::new("failure")))
                        .map_err(err)?;
                    w.write_event(Event::End(BytesEnd::new("testcase")))
                        .map_err(err)?;
                }
            }
        }
        w.write_event(Event::End(BytesEnd::new("testsuite")))
            .map_err(err)?;
    }
    w.write_event(Event::End(BytesEnd::new("testsuites")))
        .map_err(err)?;
    String::from_utf8(w.into_inner()).map_err(|e| Error::Config(format!("junit.xml: {e}")))
}
