use std::time::Instant;
use zebra_cim::rng::Address;
fn main() {
    let a = Address { seed: 1, trial: 3, stream: 4 };
    let mut out = vec![0f32; 128];
    let n = 20_000_000u64 / 128;
    let mut s = 0f32;
    for rep in 0..3 {
        let t = Instant::now();
        for i in 0..n {
            a.fill_gaussian(i * 32, &mut out);
            s += out[5];
        }
        let dt = t.elapsed().as_secs_f64();
        println!("rep {rep}: {:.3e} draws/s ({:.2} ns/draw) {s}", (n * 128) as f64 / dt, dt * 1e9 / (n * 128) as f64);
    }
}
