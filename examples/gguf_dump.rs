fn main() {
    let p = std::env::args().nth(1).unwrap();
    let g = edgellm::loader::gguf::GgufFile::open(std::path::Path::new(&p)).unwrap();
    for (k, v) in &g.metadata.entries {
        let s = format!("{v:?}");
        println!("{k} = {}", &s[..s.len().min(150)]);
    }
    let mut types = std::collections::BTreeMap::new();
    for n in g.tensor_order.iter() { let t = g.weights.get(n).unwrap(); *types.entry(t.dtype.name()).or_insert(0) += 1; }
    println!("{types:?}");
    for n in g.tensor_order.iter().take(16) { println!("{:?}", g.weights.get(n).unwrap()); }
}
