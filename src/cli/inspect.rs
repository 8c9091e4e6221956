//! `georob inspect MODEL`.

use std::process::ExitCode;

use anyhow::Result;
use georob::model::{Model, ModelInfo, ModelSummary, OnnxModel};
use serde::Serialize;

use super::args::InspectArgs;

#[derive(Serialize)]
struct InspectJson<'a> {
    georob_version: &'static str,
    path: &'a std::path::Path,
    sha256: &'a str,
    #[serde(flatten)]
    summary: &'a ModelSummary,
    /// How georob runs it; absent when it cannot (then `error` says why).
    run: Option<ModelInfo>,
    error: Option<String>,
    /// Nodes on the input→logits path without a gradient rule (empty: exact gradients).
    ops_without_gradient_rule: Vec<NodeJson>,
}

#[derive(Serialize)]
struct NodeJson {
    op_type: String,
    node: String,
}

pub fn run(args: &InspectArgs) -> Result<ExitCode> {
    let options = args.model_args.options()?;
    let onnx = OnnxModel::open(&args.model)?;
    let summary = onnx.summary();
    let loaded = Model::open(&args.model, &options);
    let (info, error) = match &loaded {
        Ok(m) => (Some(m.info()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    // The graph that runs (a final softmax may have been stripped), else the file's.
    let proto = match &loaded {
        Ok(m) => &m.runnable.proto,
        Err(_) => &onnx.proto,
    };
    let no_rule: Vec<NodeJson> = georob::grad::ops_without_rule(proto)
        .into_iter()
        .map(|n| NodeJson {
            op_type: n.op_type,
            node: n.node_name,
        })
        .collect();
    if args.json {
        let json = InspectJson {
            georob_version: env!("CARGO_PKG_VERSION"),
            path: &args.model,
            sha256: &onnx.sha256,
            summary: &summary,
            run: info,
            error,
            ops_without_gradient_rule: no_rule,
        };
        super::emit(&(serde_json::to_string_pretty(&json)? + "\n"))?;
    } else {
        print_text(&args.model, &onnx, &summary, info.as_ref(), &no_rule)?;
    }
    loaded?;
    Ok(ExitCode::SUCCESS)
}

fn print_text(
    path: &std::path::Path,
    onnx: &OnnxModel,
    s: &ModelSummary,
    info: Option<&ModelInfo>,
    no_rule: &[NodeJson],
) -> Result<()> {
    use std::fmt::Write;
    let mut out = String::new();
    let shape = |d: &georob::model::onnx::TensorDecl| match &d.shape {
        Some(dims) => format!(
            "[{}]",
            dims.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "(no shape)".into(),
    };
    writeln!(out, "model      {}", path.display())?;
    writeln!(out, "sha256     {}", onnx.sha256)?;
    writeln!(
        out,
        "producer   {}",
        if s.producer.is_empty() {
            "-"
        } else {
            &s.producer
        }
    )?;
    writeln!(out, "opset      {}", s.opset)?;
    for i in &s.inputs {
        writeln!(out, "input      {} {} {}", i.name, i.dtype, shape(i))?;
    }
    for o in &s.outputs {
        writeln!(out, "output     {} {} {}", o.name, o.dtype, shape(o))?;
    }
    writeln!(out, "parameters {}", s.parameters)?;
    writeln!(
        out,
        "softmax    {}",
        if s.ends_in_softmax {
            "the graph ends in a softmax"
        } else {
            "no final softmax"
        }
    )?;
    let ops: Vec<String> = s
        .operators
        .iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect();
    writeln!(out, "operators  {}", ops.join(" "))?;
    if no_rule.is_empty() {
        writeln!(
            out,
            "gradients  all operators have a rule (exact gradients)"
        )?;
    } else {
        let nodes: Vec<String> = no_rule
            .iter()
            .map(|n| format!("{} (node `{}`)", n.op_type, n.node))
            .collect();
        writeln!(
            out,
            "gradients  no rule for {}: finite differences unless fixed",
            nodes.join(", ")
        )?;
    }
    if let Some(i) = info {
        writeln!(
            out,
            "backend    {} — {} ({} threads, batch {})",
            i.backend, i.backend_detail, i.threads, i.batch
        )?;
        let spec = &i.input;
        writeln!(
            out,
            "input spec {:?} {}x{} {:?}, pixel×{} mean {:?} std {:?}",
            spec.layout, spec.height, spec.width, spec.channels, spec.scale, spec.mean, spec.std
        )?;
        writeln!(
            out,
            "classes    {} ({:?}, {:?})",
            i.classes, spec.output, i.output_transform
        )?;
    }
    super::emit(&out)
}
