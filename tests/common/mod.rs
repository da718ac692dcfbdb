//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use zebra_cim::experiment::plan::Plan;
use zebra_cim::experiment::workload::Layer;
use zebra_cim::experiment::{Experiment, Overrides, Params};
use zebra_cim::model::MappingSpec;

/// Parses experiment text and returns its first point's params and layer.
pub fn point(text: &str) -> (Params, Layer) {
    let exp = Experiment::parse(text, Path::new("test.toml"), Overrides::default())
        .expect("valid test experiment");
    let p = exp.points[0].params.clone();
    let layer = Layer::build(&p.layer, p.seed).expect("layer");
    (p, layer)
}

/// The plan of one built-in mapping.
pub fn plan(params: &Params, layer: &Layer, mapping: &str) -> Plan {
    Plan::new(
        params,
        layer,
        &MappingSpec::preset(mapping).expect("preset"),
    )
}
