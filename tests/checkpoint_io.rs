//! Native checkpoints: exact round trip, one error listing every mismatch, and the MAN input
//! width check.

mod common;

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use hypersegnas::arch;
use hypersegnas::checkpoint::{self, CheckpointConfig, SafetensorsFile, view_to_f32};
use hypersegnas::model::{Network, NetworkConfig, WeightMode};
use safetensors::tensor::{Dtype, TensorView};

fn demo_config() -> CheckpointConfig {
    let mut config = CheckpointConfig::new(
        NetworkConfig::demo(1, 2),
        vec!["background".into(), "spleen".into()],
    );
    config.roi = [64; 3];
    config
}

/// Tensors by key: (shape, f32 values).
type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Every tensor of a safetensors file as (shape, f32 values), plus its metadata.
fn read_all(path: &Path) -> (Tensors, HashMap<String, String>) {
    let file = SafetensorsFile::open(path).unwrap();
    let tensors = file.tensors().unwrap();
    let all = tensors
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.shape().to_vec(), view_to_f32(&v).unwrap())))
        .collect();
    (all, file.metadata().unwrap())
}

/// Writes tensors and metadata as a safetensors file.
fn write_all(path: &Path, tensors: &Tensors, metadata: HashMap<String, String>) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, (s, v))| {
            (
                k.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, Some(metadata), path).unwrap();
}

#[test]
fn save_and_load_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.safetensors");
    let device = Device::flex();
    let config = demo_config();
    let network = Network::fresh(&config.network, &device, 3).unwrap();
    checkpoint::save(&path, &network, &config).unwrap();

    // Every parameter is in the file, with MONAI's key names for the super-net.
    let (tensors, metadata) = read_all(&path);
    assert_eq!(tensors.len(), network.names.len());
    assert!(metadata.contains_key("hypersegnas"));
    for key in [
        "stem_down.0.mod.1.weight",
        "stem_down.3.mod.5.bias",
        "stem_up.2.mod.1.weight",
        "stem_finals.0.conv.weight",
        "stem_finals.1.bias",
        "dints_space.cell_tree.(0, 2).preprocess.conv_1.weight",
        "dints_space.cell_tree.(11, 1).preprocess.conv.weight",
        "dints_space.cell_tree.(5, 9).op.ops.1.conv.weight",
        "encoder.conv5.weight",
        "man.fc0.weight",
        "man.fc2.bias",
        "w_fixed",
    ] {
        assert!(tensors.contains_key(key), "missing {key}");
    }
    // Skip ops hold no weights; a super-net's conv op sits at K = 1.
    assert!(!tensors.keys().any(|k| k.contains("op.ops.0")));
    // Linear weights are stored [out, in] as in PyTorch.
    let cfg = &config.network;
    assert_eq!(
        tensors["man.fc0.weight"].0,
        vec![cfg.man_hidden[0], cfg.man_input_len()]
    );

    let loaded = checkpoint::load(&path, &device).unwrap();
    assert_eq!(loaded.config.class_names, config.class_names);
    let path2 = dir.path().join("again.safetensors");
    checkpoint::save(&path2, &loaded.network, &loaded.config).unwrap();
    let (again, _) = read_all(&path2);
    assert_eq!(
        again, tensors,
        "a loaded and re-saved checkpoint must be identical"
    );

    // And the loaded network computes the same logits.
    let code = arch::preset("dints-paper", &cfg.space).unwrap();
    let x = || {
        Tensor::<5>::from_data(
            TensorData::new(common::noise(32 * 32 * 32, 4), [1, 1, 32, 32, 32]),
            &device,
        )
    };
    let a: Vec<f32> = network
        .forward(x(), &code, WeightMode::Man)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let b: Vec<f32> = loaded
        .network
        .forward(x(), &code, WeightMode::Man)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn mismatches_are_listed_in_one_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    let device = Device::flex();
    let config = demo_config();
    let network = Network::fresh(&config.network, &device, 3).unwrap();
    checkpoint::save(&good, &network, &config).unwrap();

    let (mut tensors, metadata) = read_all(&good);
    tensors.remove("stem_finals.1.bias").unwrap();
    tensors
        .remove("dints_space.cell_tree.(3, 4).op.ops.1.norm.weight")
        .unwrap();
    tensors.insert("extra.weight".into(), (vec![2], vec![1.0, 2.0]));
    tensors.insert("stem_down.0.mod.2.weight".into(), (vec![3], vec![1.0; 3]));
    let bad = dir.path().join("bad.safetensors");
    write_all(&bad, &tensors, metadata);

    let err = checkpoint::load(&bad, &device)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("bad.safetensors"), "{err}");
    assert!(
        err.contains("2 missing") && err.contains("stem_finals.1.bias"),
        "{err}"
    );
    assert!(err.contains("1 unexpected: extra.weight"), "{err}");
    assert!(
        err.contains("1 wrongly shaped: stem_down.0.mod.2.weight"),
        "{err}"
    );
}

#[test]
fn man_input_width_other_than_the_configuration_is_refused_with_both_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    let device = Device::flex();
    let config = demo_config();
    let network = Network::fresh(&config.network, &device, 3).unwrap();
    checkpoint::save(&good, &network, &config).unwrap();

    let (mut tensors, metadata) = read_all(&good);
    let hidden = config.network.man_hidden[0];
    tensors.insert(
        "man.fc0.weight".into(),
        (vec![hidden, 378], vec![0.0; hidden * 378]),
    );
    let bad = dir.path().join("table5.safetensors");
    write_all(&bad, &tensors, metadata);

    let err = checkpoint::load(&bad, &device)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("378") && err.contains("376"), "{err}");
}

#[test]
fn non_checkpoints_are_refused_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not a checkpoint").unwrap();
    let err = checkpoint::load(&garbage, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("garbage.safetensors") && err.contains("not a safetensors"),
        "{err}"
    );

    let plain = dir.path().join("plain.safetensors");
    let tensors = HashMap::from([("w".to_string(), (vec![1], vec![0.5]))]);
    write_all(&plain, &tensors, HashMap::new());
    let err = checkpoint::load(&plain, &device).err().unwrap().to_string();
    assert!(
        err.contains("plain.safetensors") && err.contains("not a HyperSegNAS checkpoint"),
        "{err}"
    );

    let missing = dir.path().join("missing.safetensors");
    let err = checkpoint::load(&missing, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing.safetensors"), "{err}");
}
