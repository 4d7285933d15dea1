//! `m2m-fuzz-seeds VECTORS_DIR CORPUS_DIR`: writes `CORPUS_DIR/<target>/seed-N` for every
//! fuzz target from the vectors in `VECTORS_DIR` (see the library).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [vectors, corpus] = args.as_slice() else {
        eprintln!("usage: m2m-fuzz-seeds VECTORS_DIR CORPUS_DIR");
        return ExitCode::from(2);
    };
    let read = |name: &str| std::fs::read_to_string(vectors.join(name));
    let (p2p, hub, crypto) = match (
        read("p2p-transcript-v2.jsonl"),
        read("hub-transcript-v2.jsonl"),
        read("crypto-v2.json"),
    ) {
        (Ok(p), Ok(h), Ok(c)) => (p, h, c),
        _ => {
            eprintln!("cannot read the vectors in {}", vectors.display());
            return ExitCode::FAILURE;
        }
    };
    let vectors = m2m_fuzz_seeds::Vectors::parse(&p2p, &hub, &crypto);
    for (target, seeds) in vectors.seeds() {
        let dir = corpus.join(target);
        if seeds.is_empty() {
            eprintln!("no seeds for {target}: are the vectors complete?");
            return ExitCode::FAILURE;
        }
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("{}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        for (i, seed) in seeds.iter().enumerate() {
            if let Err(e) = std::fs::write(dir.join(format!("seed-{i}")), seed) {
                eprintln!("{}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        }
        println!("{target}: {} seeds", seeds.len());
    }
    ExitCode::SUCCESS
}
