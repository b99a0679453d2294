//! Architecture files written by this tool read back as the same code: our JSON, and
//! MONAI's `.pth` (numpy arrays in a torch zip), through the pure-Rust torch reader.

use hypersegnas::arch::{self, SearchSpace};

#[test]
fn monai_arch_files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for (space, name) in [
        (SearchSpace::dints(12, 4), "dints-paper"),
        (SearchSpace::hypersegnas(12, 4), "all-conv"),
        (SearchSpace::dints(5, 3), "random-7"),
        (SearchSpace::dints(3, 2), "unet"),
    ] {
        let code = arch::preset(name, &space).unwrap();
        let path = dir.path().join(format!("{name}.pth"));
        hypersegnas::monai::export::write_arch_pth(&path, &code).unwrap();
        let back = hypersegnas::monai::import::read_arch_pth(&path).unwrap();
        assert_eq!(
            back, code,
            "{name} on {} layers x {} levels",
            space.num_layers, space.num_depths
        );
    }
}

#[test]
fn the_cli_converts_json_to_monai_and_refuses_its_input_as_output() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("a.json");
    let pth = dir.path().join("a.pth");
    let exe = env!("CARGO_BIN_EXE_hypersegnas");
    let run =
        |args: &[&std::ffi::OsStr]| std::process::Command::new(exe).args(args).output().unwrap();
    let out = run(&[
        "arch".as_ref(),
        "--preset".as_ref(),
        "random-3".as_ref(),
        "--space".as_ref(),
        "dints".as_ref(),
        "-o".as_ref(),
        json.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "arch".as_ref(),
        "--from".as_ref(),
        json.as_os_str(),
        "-o".as_ref(),
        pth.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        hypersegnas::monai::import::read_arch_pth(&pth).unwrap(),
        arch::read_arch_json(&json).unwrap()
    );
    let before = std::fs::read(&json).unwrap();
    let out = run(&[
        "arch".as_ref(),
        "--from".as_ref(),
        json.as_os_str(),
        "-o".as_ref(),
        json.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        std::fs::read(&json).unwrap(),
        before,
        "the input is untouched"
    );
    // An existing output is replaced only with --force.
    let again = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "arch".as_ref(),
            "--preset".as_ref(),
            "unet".as_ref(),
            "-o".as_ref(),
            pth.as_os_str(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        run(&args)
    };
    let before = std::fs::read(&pth).unwrap();
    let out = again(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --force"));
    assert_eq!(std::fs::read(&pth).unwrap(), before);
    assert!(again(&["--force"]).status.success());
    assert_ne!(std::fs::read(&pth).unwrap(), before);
}

#[test]
fn a_pth_that_is_not_a_zip_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.pth");
    std::fs::write(&path, b"garbage").unwrap();
    let err = hypersegnas::monai::open::read_arch_file(&path).unwrap_err();
    assert!(
        err.contains("g.pth") && err.contains("torch.save zip"),
        "{err}"
    );
}
