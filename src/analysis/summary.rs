//! Per-stage summary of a network: output size, blocks, parameters, FLOPs.

use crate::arch::ArchSpec;
use crate::net::{Plan, ShortcutPlan};
use serde::Serialize;

#[derive(Serialize, Debug, Clone)]
pub struct StageRow {
    /// conv1, pool, layer1.., fc
    pub name: String,
    /// output (H, W, C) for one image
    pub output: [usize; 3],
    pub blocks: usize,
    pub params: usize,
    /// forward multiply-adds, one image
    pub flops: u64,
}

#[derive(Serialize, Debug, Clone)]
pub struct Summary {
    pub arch: ArchSpec,
    pub input: [usize; 3],
    pub stages: Vec<StageRow>,
    /// trainable parameters
    pub params: usize,
    /// forward multiply-adds for one image (convolutions + fc)
    pub flops: u64,
    /// projection shortcuts in the network
    pub projections: usize,
}

pub fn summarize(spec: &ArchSpec, h: usize, w: usize) -> Summary {
    let plan = Plan::new(spec, h, w);
    let unit_params = |u: &crate::net::UnitPlan| u.conv.weight_len() + 2 * u.conv.cout;
    let mut stages = vec![StageRow {
        name: "conv1".into(),
        output: [plan.stem.yd.h, plan.stem.yd.w, plan.stem.yd.c],
        blocks: 0,
        params: unit_params(&plan.stem),
        flops: plan.stem.conv.macs(h, w),
    }];
    if let Some((_, d)) = plan.pool {
        stages.push(StageRow { name: "maxpool".into(), output: [d.h, d.w, d.c], blocks: 0, params: 0, flops: 0 });
    }
    let mut projections = 0;
    for (si, _) in spec.stages.iter().enumerate() {
        let blocks: Vec<_> = plan.blocks.iter().filter(|b| b.stage == si).collect();
        let mut row =
            StageRow { name: format!("layer{}", si + 1), output: [0; 3], blocks: blocks.len(), params: 0, flops: 0 };
        for b in blocks {
            let proj = match &b.shortcut {
                ShortcutPlan::Proj(u) => {
                    projections += 1;
                    Some(u)
                }
                _ => None,
            };
            for u in b.units.iter().chain(proj) {
                row.params += unit_params(u);
                row.flops += u.conv.macs(u.xd.h, u.xd.w);
            }
            row.output = [b.yd.h, b.yd.w, b.yd.c];
        }
        stages.push(row);
    }
    let fc = plan.fc;
    stages.push(StageRow {
        name: "avgpool+fc".into(),
        output: [1, 1, fc.fout],
        blocks: 0,
        params: fc.fin * fc.fout + fc.fout,
        flops: (fc.fin * fc.fout) as u64,
    });
    let s = Summary {
        arch: spec.clone(),
        input: [h, w, spec.in_channels],
        params: plan.n_params,
        flops: plan.macs(),
        projections,
        stages,
    };
    debug_assert_eq!(s.stages.iter().map(|r| r.params).sum::<usize>(), s.params);
    s
}

/// Human-readable table.
pub fn render(s: &Summary) -> String {
    let a = &s.arch;
    let mut out = format!(
        "{} ({:?} family, {:?} blocks, shortcut {}, {} classes, input {}x{}x{})\n",
        a.name,
        a.family,
        a.block,
        match a.shortcut {
            None => "none (plain)".to_string(),
            Some(o) => format!("{o:?}"),
        },
        a.classes,
        s.input[0],
        s.input[1],
        s.input[2]
    );
    out += &format!("{:<12} {:>14} {:>7} {:>14} {:>16}\n", "stage", "output", "blocks", "params", "mult-adds");
    for r in &s.stages {
        out += &format!(
            "{:<12} {:>14} {:>7} {:>14} {:>16}\n",
            r.name,
            format!("{}x{}x{}", r.output[0], r.output[1], r.output[2]),
            if r.blocks > 0 { r.blocks.to_string() } else { "-".into() },
            thousands(r.params as u64),
            thousands(r.flops)
        );
    }
    out += &format!(
        "{:<12} {:>14} {:>7} {:>14} {:>16}\n",
        "total",
        "",
        s.stages.iter().map(|r| r.blocks).sum::<usize>(),
        thousands(s.params as u64),
        thousands(s.flops)
    );
    out += &format!(
        "= {:.3} M parameters, {:.4} G multiply-adds per image\n",
        s.params as f64 / 1e6,
        s.flops as f64 / 1e9
    );
    out
}

fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchOptions;

    #[test]
    fn stage_rows_add_up() {
        let spec = ArchSpec::parse("resnet50", &ArchOptions::default()).unwrap();
        let s = summarize(&spec, 224, 224);
        assert_eq!(s.params, 25_557_032);
        assert_eq!(s.stages.iter().map(|r| r.params).sum::<usize>(), s.params);
        assert_eq!(s.stages.iter().map(|r| r.flops).sum::<u64>(), s.flops);
        assert_eq!(s.projections, 4);
        assert_eq!(s.stages.last().unwrap().output, [1, 1, 1000]);
        assert_eq!(s.stages[2].output, [56, 56, 256]);
        assert!(render(&s).contains("25,557,032"));
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
