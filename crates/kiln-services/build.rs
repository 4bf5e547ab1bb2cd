// The demo dataset is embedded with include_dir!, which cargo cannot see into:
// rebuild when its files change.
fn main() {
    println!("cargo:rerun-if-changed=../../datasets/kiln-demo/samples.jsonl");
    println!("cargo:rerun-if-changed=../../datasets/kiln-demo/repos");
}
