//! What a layer's work costs: energy per pass and an area proxy, as pure
//! functions of its cost counts and a few coefficients. The ADC models come
//! from the literature, each a function of the bits a conversion resolves
//! (docs/MODEL.md, "Energy and area models", gives every formula and source).

use serde::{Deserialize, Serialize};

/// Effective resolutions counted, 0..=22 bits: the widest range an array can
/// have is `[-P, P]` at `P = 2^20` (`[array] parallelism`), 2^21 + 1 levels.
pub const BITS: usize = 23;

/// Counts by effective resolution: element `b` counts those needing `b` bits.
pub type BitsHistogram = [u64; BITS];

/// Which ADC model charges a conversion (`[energy] model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdcModel {
    /// The energy proxy result files have always had: a Walden ADC and cell
    /// reads, no digital or zero-check terms.
    Proxy,
    /// Walden figure of merit: `adc_fj_per_step * 2^b`.
    Walden,
    /// NeuroSim's 65 nm SAR ADC.
    NeurosimSar,
    /// The ISAAC-derived 32 nm SAR table, 4 to 10 bits.
    Isaac,
    /// A flash ADC: `2^b - 1` comparators.
    Flash,
    /// The envelope of B. Murmann's ADC survey: Walden-limited at low
    /// resolution, thermal-noise-limited (`4^b`) at high resolution.
    Murmann,
}

impl AdcModel {
    /// Every model, in the order error messages list them.
    pub const ALL: [AdcModel; 6] = [
        AdcModel::Proxy,
        AdcModel::Walden,
        AdcModel::NeurosimSar,
        AdcModel::Isaac,
        AdcModel::Flash,
        AdcModel::Murmann,
    ];

    /// The name experiment files use.
    pub fn label(&self) -> &'static str {
        match self {
            AdcModel::Proxy => "proxy",
            AdcModel::Walden => "walden",
            AdcModel::NeurosimSar => "neurosim-sar",
            AdcModel::Isaac => "isaac",
            AdcModel::Flash => "flash",
            AdcModel::Murmann => "murmann",
        }
    }

    /// The model named `name`, if any.
    pub fn from_label(name: &str) -> Option<AdcModel> {
        Self::ALL.into_iter().find(|m| m.label() == name)
    }

    /// Energy of one conversion resolving `bits` (fJ); `None` outside the
    /// model's range (the ISAAC table above 10 bits).
    pub fn conversion_fj(&self, p: &EnergyParams, bits: u32) -> Option<f64> {
        let steps = 2f64.powi(bits as i32);
        Some(match self {
            AdcModel::Proxy | AdcModel::Walden => p.adc_fj_per_step * steps,
            AdcModel::NeurosimSar => {
                let b = bits as f64;
                // uW times ns is fJ.
                (SAR_UW_PER_BIT * b + SAR_UW) * (b + 1.0) * SAR_NS_PER_CYCLE
            }
            AdcModel::Isaac => ISAAC_PJ[isaac_row(bits)?] * 1000.0,
            AdcModel::Flash => (steps - 1.0) * p.comparator_fj,
            AdcModel::Murmann => {
                let walden = p.envelope_fj_per_step * steps;
                let thermal = thermal_fj_per_4b(p.schreier_db) * steps * steps;
                walden.max(thermal)
            }
        })
    }

    /// Area of one ADC resolving `bits` (um^2); `None` where the model has
    /// no area (a figure of merit is energy only) or outside its range.
    pub fn adc_um2(&self, p: &EnergyParams, bits: u32) -> Option<f64> {
        match self {
            AdcModel::Proxy | AdcModel::Walden | AdcModel::Murmann => None,
            AdcModel::NeurosimSar => {
                let (nmos, pmos) = sar_transistors(bits);
                Some((nmos + pmos) as f64 * TRANSISTOR_UM2)
            }
            AdcModel::Isaac => Some(ISAAC_UM2[isaac_row(bits)?]),
            AdcModel::Flash => Some((2f64.powi(bits as i32) - 1.0) * p.comparator_um2),
        }
    }
}

/// Which bits an ADC conversion is charged at (`[energy] adc_scaling`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdcScaling {
    /// Every conversion at the ADC's bits.
    Fixed,
    /// Each conversion at the bits its group's range needs
    /// ([`Adc::effective_bits`](crate::model::Adc::effective_bits)).
    Effective,
}

impl AdcScaling {
    /// The name experiment files use.
    pub fn label(&self) -> &'static str {
        match self {
            AdcScaling::Fixed => "fixed",
            AdcScaling::Effective => "effective",
        }
    }
}

/// NeuroSim's SAR ADC at 65 nm (HP roadmap, 300 K), `SarADC::GetColumnPower`:
/// power `(2.9503 b + 22.047)` uW without the column-current term, for
/// `b + 1` cycles of 1 ns.
const SAR_UW_PER_BIT: f64 = 2.9503;
const SAR_UW: f64 = 22.047;
const SAR_NS_PER_CYCLE: f64 = 1.0;

/// Minimum-size transistors of NeuroSim's SAR ADC (`SarADC::CalculateUnitArea`):
/// `(269 + 109 (b - 1))` NMOS and `(209 + 73 (b - 1))` PMOS.
pub fn sar_transistors(bits: u32) -> (u64, u64) {
    let b = bits as i64;
    ((269 + 109 * (b - 1)) as u64, (209 + 73 * (b - 1)) as u64)
}

/// The feature size the 65 nm areas are in (um).
const F_UM: f64 = 0.065;

/// Area of one minimum-size transistor by NeuroSim's gate-area rule
/// (`CalculateGateArea` for an inverter's one transistor): a cell
/// `2 (POLY_WIDTH + MIN_GAP_BET_GATE_POLY) = 7.6` F wide and
/// `MAX_TRANSISTOR_HEIGHT = 28` F high, 212.8 F^2, at 65 nm.
pub const TRANSISTOR_UM2: f64 = 2.0 * (1.0 + 2.8) * 28.0 * F_UM * F_UM;

/// The ISAAC-derived 32 nm SAR ADC, 4 to 10 bits: energy per conversion (pJ).
const ISAAC_PJ: [f64; 7] = [0.79, 0.99, 1.20, 1.42, 1.67, 1.97, 2.38];
/// ... and area (um^2).
const ISAAC_UM2: [f64; 7] = [361.0, 477.0, 627.0, 845.0, 1200.0, 1828.0, 3002.0];
/// The resolutions the ISAAC table covers.
pub const ISAAC_BITS: std::ops::RangeInclusive<u32> = 4..=10;

/// The ISAAC table's row for `bits`: below 4 bits the 4-bit ADC (a SAR's
/// comparator, clocking and logic do not shrink with fewer bits); above 10
/// none (the table is not extrapolated).
fn isaac_row(bits: u32) -> Option<usize> {
    (bits <= *ISAAC_BITS.end()).then(|| bits.max(*ISAAC_BITS.start()) as usize - 4)
}

/// The thermal-noise-limited energy per `4^b` (fJ) of an ADC with Schreier
/// figure of merit `db`: `FOM_S = SNDR + 10 log10(f_s / (2 P))` with the
/// ideal `SNDR = 10 log10(1.5 4^b)` gives `E = P / f_s = 0.75 4^b 10^(-FOM_S/10)` J.
fn thermal_fj_per_4b(db: f64) -> f64 {
    0.75 * 10f64.powf(-db / 10.0) * 1e15
}

/// The coefficients of every energy and area model (`[energy]`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EnergyParams {
    pub model: AdcModel,
    pub adc_scaling: AdcScaling,
    /// Walden figure of merit of `proxy` and `walden` (fJ per conversion step).
    pub adc_fj_per_step: f64,
    /// Energy of one active cell read (fJ).
    pub cell_fj: f64,
    /// Energy of adding one conversion result into its output (shift and add, fJ).
    pub add_fj: f64,
    /// Energy of one zero check, a skipped or converted slot (fJ).
    pub check_fj: f64,
    /// Energy of one flash comparator decision (fJ).
    pub comparator_fj: f64,
    /// `murmann`'s Walden figure of merit at low resolution (fJ per step).
    pub envelope_fj_per_step: f64,
    /// `murmann`'s Schreier figure of merit at high resolution (dB).
    pub schreier_db: f64,
    /// Area of one cell (um^2).
    pub cell_um2: f64,
    /// Area of one shift-and-add unit, one per ADC (um^2).
    pub add_um2: f64,
    /// Area of one zero-check unit (um^2).
    pub check_um2: f64,
    /// Area of one flash comparator (um^2).
    pub comparator_um2: f64,
}

/// Defaults, see docs/MODEL.md ("Energy and area models").
pub const DEFAULTS: EnergyParams = EnergyParams {
    model: AdcModel::Proxy,
    adc_scaling: AdcScaling::Fixed,
    adc_fj_per_step: 50.0,
    cell_fj: 1.0,
    add_fj: 100.0,
    check_fj: 30.0,
    comparator_fj: 22.0,
    envelope_fj_per_step: 1.0,
    schreier_db: 180.0,
    cell_um2: 280.0 * F_UM * F_UM,
    add_um2: 832.0 * TRANSISTOR_UM2,
    check_um2: 28.0 * TRANSISTOR_UM2,
    comparator_um2: 20.0 * TRANSISTOR_UM2,
};

impl EnergyParams {
    /// Every coefficient beyond the proxy's two (`adc_fj_per_step`,
    /// `cell_fj`) as `key=value` text, or `None` when all are at their
    /// defaults: what a resume key adds so that the keys of proxy-only
    /// experiments do not change.
    pub fn key_text(&self) -> Option<String> {
        let d = DEFAULTS;
        let p = EnergyParams {
            adc_fj_per_step: d.adc_fj_per_step,
            cell_fj: d.cell_fj,
            ..*self
        };
        (p != d).then(|| {
            format!(
                "model={};adc_scaling={};add_fj={};check_fj={};comparator_fj={};\
                 envelope_fj_per_step={};schreier_db={};cell_um2={};add_um2={};\
                 check_um2={};comparator_um2={}",
                p.model.label(),
                p.adc_scaling.label(),
                p.add_fj,
                p.check_fj,
                p.comparator_fj,
                p.envelope_fj_per_step,
                p.schreier_db,
                p.cell_um2,
                p.add_um2,
                p.check_um2,
                p.comparator_um2
            )
        })
    }
}

/// What one pass of a layer did, in counts: the input of [`energy`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    pub conversions: u64,
    /// Conversions by the bits their group's range needs (capped at the ADC's).
    pub conversions_by_bits: BitsHistogram,
    /// Cell reads with a non-zero digit and input bit 1, in converted groups.
    pub active_reads: u64,
    /// Zero checks skipping needs.
    pub zero_checks: u64,
    /// Multiply-accumulates of the layer.
    pub macs: u64,
}

/// Energy of one pass (fJ), by where it goes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Energy {
    pub adc_fj: f64,
    pub cells_fj: f64,
    /// Shift-and-add of each conversion result.
    pub digital_fj: f64,
    /// Zero checks.
    pub checks_fj: f64,
}

impl Energy {
    /// The sum of the parts.
    pub fn total_fj(&self) -> f64 {
        self.adc_fj + self.cells_fj + self.digital_fj + self.checks_fj
    }

    /// The total per MAC (fJ): `proxy` gives what result files' `energy_fj_per_mac` always held.
    pub fn fj_per_mac(&self, macs: u64) -> f64 {
        self.total_fj() / macs as f64
    }

    /// The ADC's share of the total (0 when there is no energy).
    pub fn adc_share(&self) -> f64 {
        let total = self.total_fj();
        if total > 0.0 {
            self.adc_fj / total
        } else {
            0.0
        }
    }
}

/// The energy of the pass `a` on an ADC of `adc_bits` (`None`: ideal), or
/// `None` when it has no figure: a `fixed` ideal ADC (no bits to charge), or
/// a conversion outside the model's range.
pub fn energy(p: &EnergyParams, adc_bits: Option<u32>, a: &Activity) -> Option<Energy> {
    let adc_fj = match p.adc_scaling {
        AdcScaling::Fixed => a.conversions as f64 * p.model.conversion_fj(p, adc_bits?)?,
        AdcScaling::Effective => by_bits(&a.conversions_by_bits, |b| p.model.conversion_fj(p, b))?,
    };
    let (digital_fj, checks_fj) = match p.model {
        AdcModel::Proxy => (0.0, 0.0),
        _ => (
            a.conversions as f64 * p.add_fj,
            a.zero_checks as f64 * p.check_fj,
        ),
    };
    Some(Energy {
        adc_fj,
        cells_fj: a.active_reads as f64 * p.cell_fj,
        digital_fj,
        checks_fj,
    })
}

/// `sum_b counts[b] cost(b)` over the non-empty resolutions; `None` if one
/// of them has no cost.
fn by_bits(counts: &BitsHistogram, cost: impl Fn(u32) -> Option<f64>) -> Option<f64> {
    let mut sum = 0.0;
    for (b, &n) in counts.iter().enumerate() {
        if n > 0 {
            sum += n as f64 * cost(b as u32)?;
        }
    }
    Some(sum)
}

/// What the area proxy counts of one layer on its arrays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Cells: K x N x planes, zero digits included.
    pub cells: u64,
    /// Converted (chunk, plane, column) groups, one ADC each, by the bits
    /// their ranges need (capped at the ADC's).
    pub groups_by_bits: BitsHistogram,
    /// Zero-check units: a flag per group with plane skipping, a detector
    /// per chunk with input skipping.
    pub check_units: u64,
}

impl Layout {
    /// The layout of two layers' arrays together.
    pub fn add(&mut self, o: &Layout) {
        self.cells += o.cells;
        add_histogram(&mut self.groups_by_bits, &o.groups_by_bits);
        self.check_units += o.check_units;
    }
}

/// Adds histogram `b` into `a`.
pub fn add_histogram(a: &mut BitsHistogram, b: &BitsHistogram) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Area of one layer's arrays (um^2), by what takes it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Area {
    pub adc_um2: f64,
    pub cells_um2: f64,
    /// One shift-and-add unit per ADC.
    pub digital_um2: f64,
    pub checks_um2: f64,
}

impl Area {
    /// The sum of the parts.
    pub fn total_um2(&self) -> f64 {
        self.adc_um2 + self.cells_um2 + self.digital_um2 + self.checks_um2
    }
}

/// The area proxy of `l` with ADCs of `adc_bits` (`None`: ideal): one ADC
/// per converted group, sized for the ADC's bits (`fixed`) or its group's
/// (`effective`). `None` when the model has no ADC area or the ADC no bits.
pub fn area(p: &EnergyParams, adc_bits: Option<u32>, l: &Layout) -> Option<Area> {
    let adcs: u64 = l.groups_by_bits.iter().sum();
    let adc_um2 = match p.adc_scaling {
        AdcScaling::Fixed => adcs as f64 * p.model.adc_um2(p, adc_bits?)?,
        AdcScaling::Effective => by_bits(&l.groups_by_bits, |b| p.model.adc_um2(p, b))?,
    };
    Some(Area {
        adc_um2,
        cells_um2: l.cells as f64 * p.cell_um2,
        digital_um2: adcs as f64 * p.add_um2,
        checks_um2: l.check_units as f64 * p.check_um2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within 1e-12 relative: the hand values are written to the digits
    /// their inputs have, and powers of ten are not exact in binary.
    fn close(got: f64, want: f64, what: &str) {
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "{what}: got {got}, want {want}"
        );
    }

    fn with(model: AdcModel) -> EnergyParams {
        EnergyParams { model, ..DEFAULTS }
    }

    #[test]
    fn every_model_charges_its_formula_by_hand() {
        // b = 3 and b = 12, default coefficients.
        let cases = [
            // 50 fJ * 2^3; 50 * 4096.
            (AdcModel::Proxy, 400.0, Some(204_800.0)),
            (AdcModel::Walden, 400.0, Some(204_800.0)),
            // (2.9503 * 3 + 22.047) * 4 = 30.8979 * 4; (35.4036 + 22.047) * 13.
            (AdcModel::NeurosimSar, 123.5916, Some(746.8578)),
            // Below 4 bits the 4-bit entry; above 10 none.
            (AdcModel::Isaac, 790.0, None),
            // (2^3 - 1) * 22; 4095 * 22.
            (AdcModel::Flash, 154.0, Some(90_090.0)),
            // max(1 * 8, 7.5e-4 * 64) = 8; max(4096, 7.5e-4 * 4^12 = 12582.912).
            (AdcModel::Murmann, 8.0, Some(12_582.912)),
        ];
        for (model, at3, at12) in cases {
            let p = with(model);
            close(p.model.conversion_fj(&p, 3).unwrap(), at3, model.label());
            match (p.model.conversion_fj(&p, 12), at12) {
                (Some(got), Some(want)) => close(got, want, model.label()),
                (got, want) => assert_eq!(got, want, "{}", model.label()),
            }
        }
        // The ISAAC table's ends.
        let p = with(AdcModel::Isaac);
        close(p.model.conversion_fj(&p, 10).unwrap(), 2380.0, "isaac 10");
        close(p.model.conversion_fj(&p, 8).unwrap(), 1670.0, "isaac 8");
        assert_eq!(p.model.conversion_fj(&p, 11), None);
    }

    #[test]
    fn adc_areas_match_their_sources() {
        // 212.8 F^2 at 65 nm = 0.89908 um^2.
        close(TRANSISTOR_UM2, 0.89908, "transistor");
        // 3 bits: NMOS 269 + 218 = 487, PMOS 209 + 146 = 355, 842 transistors.
        assert_eq!(sar_transistors(3), (487, 355));
        let p = with(AdcModel::NeurosimSar);
        close(p.model.adc_um2(&p, 3).unwrap(), 842.0 * 0.89908, "sar 3");
        let p = with(AdcModel::Isaac);
        close(p.model.adc_um2(&p, 2).unwrap(), 361.0, "isaac 2");
        close(p.model.adc_um2(&p, 8).unwrap(), 1200.0, "isaac 8");
        // 7 comparators of 20 transistors.
        let p = with(AdcModel::Flash);
        close(p.model.adc_um2(&p, 3).unwrap(), 140.0 * 0.89908, "flash 3");
        for m in [AdcModel::Proxy, AdcModel::Walden, AdcModel::Murmann] {
            assert_eq!(m.adc_um2(&with(m), 6), None);
        }
    }

    /// 10 conversions: 4 at 1 bit, 6 at 3 bits; 7 active reads; 5 checks; 8 MACs.
    fn activity() -> Activity {
        let mut by = [0; BITS];
        by[1] = 4;
        by[3] = 6;
        Activity {
            conversions: 10,
            conversions_by_bits: by,
            active_reads: 7,
            zero_checks: 5,
            macs: 8,
        }
    }

    #[test]
    fn the_breakdown_adds_its_parts_by_hand() {
        let a = activity();
        // Proxy, fixed 4 bits: ADC 10 * 50 * 16 = 8000, cells 7; no digital or checks.
        let e = energy(&DEFAULTS, Some(4), &a).unwrap();
        assert_eq!(
            e,
            Energy {
                adc_fj: 8000.0,
                cells_fj: 7.0,
                digital_fj: 0.0,
                checks_fj: 0.0
            }
        );
        assert_eq!(e.fj_per_mac(a.macs), 8007.0 / 8.0);
        // Walden, effective: ADC 4 * 100 + 6 * 400 = 2800; adds 10 * 100;
        // checks 5 * 30.
        let p = EnergyParams {
            adc_scaling: AdcScaling::Effective,
            ..with(AdcModel::Walden)
        };
        let e = energy(&p, Some(4), &a).unwrap();
        assert_eq!(
            e,
            Energy {
                adc_fj: 2800.0,
                cells_fj: 7.0,
                digital_fj: 1000.0,
                checks_fj: 150.0
            }
        );
        assert_eq!(e.adc_share(), 2800.0 / 3957.0);
        // The effective bits need no ADC bits: an ideal ADC has a figure.
        assert_eq!(energy(&p, None, &a), Some(e));
        // A fixed ideal ADC has none.
        assert_eq!(energy(&with(AdcModel::Walden), None, &a), None);
        // ISAAC, effective: both resolutions below 4 bits or at 3 charge 0.79 pJ.
        let p = EnergyParams {
            adc_scaling: AdcScaling::Effective,
            ..with(AdcModel::Isaac)
        };
        close(energy(&p, Some(8), &a).unwrap().adc_fj, 7900.0, "isaac");
        // NeuroSim, fixed 1 bit: (2.9503 + 22.047) * 2 = 49.9946 per conversion.
        let p = with(AdcModel::NeurosimSar);
        close(energy(&p, Some(1), &a).unwrap().adc_fj, 499.946, "sar");
    }

    #[test]
    fn the_area_counts_one_adc_and_adder_per_converted_group() {
        // 3 groups at 2 bits, 1 at 4; 64 cells; 5 check units. Flash,
        // effective: 3 * 3 + 15 = 24 comparators of 20 transistors.
        let mut by = [0; BITS];
        by[2] = 3;
        by[4] = 1;
        let l = Layout {
            cells: 64,
            groups_by_bits: by,
            check_units: 5,
        };
        let p = EnergyParams {
            adc_scaling: AdcScaling::Effective,
            ..with(AdcModel::Flash)
        };
        let t = TRANSISTOR_UM2;
        let a = area(&p, Some(6), &l).unwrap();
        close(a.adc_um2, 24.0 * 20.0 * t, "adc");
        close(a.cells_um2, 64.0 * 280.0 * 0.065 * 0.065, "cells");
        close(a.digital_um2, 4.0 * 832.0 * t, "digital");
        close(a.checks_um2, 5.0 * 28.0 * t, "checks");
        // Fixed: 4 ADCs of 6 bits, 63 comparators each.
        let p = with(AdcModel::Flash);
        close(
            area(&p, Some(6), &l).unwrap().adc_um2,
            4.0 * 63.0 * 20.0 * t,
            "fixed",
        );
        assert_eq!(area(&p, None, &l), None);
        assert_eq!(area(&DEFAULTS, Some(6), &l), None);
    }

    #[test]
    fn the_resume_text_is_none_at_the_defaults_whatever_the_proxy_coefficients() {
        assert_eq!(DEFAULTS.key_text(), None);
        let proxy = EnergyParams {
            adc_fj_per_step: 20.0,
            cell_fj: 3.0,
            ..DEFAULTS
        };
        assert_eq!(proxy.key_text(), None);
        let text = with(AdcModel::Isaac).key_text().unwrap();
        assert!(
            text.starts_with("model=isaac;adc_scaling=fixed;add_fj=100;"),
            "{text}"
        );
    }

    #[test]
    fn every_model_label_reads_back() {
        for m in AdcModel::ALL {
            assert_eq!(AdcModel::from_label(m.label()), Some(m));
        }
        assert_eq!(AdcModel::from_label("sar"), None);
    }
}
