//! Choosing where tensors live: Burn's wgpu backend on a GPU, or its Flex CPU backend.

use burn::tensor::Device;

/// What the user asked for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A real GPU through wgpu when one exists, else the CPU backend.
    Auto,
    /// wgpu, whatever adapter it finds (including a software one); an error if none.
    Gpu,
    /// The Flex CPU backend.
    Cpu,
}

/// The device that was chosen, and why.
#[derive(Clone, Debug)]
pub struct SelectedDevice {
    /// The Burn device.
    pub device: Device,
    /// A one-line description for logs and the GUI.
    pub description: String,
    /// True for the wgpu backend.
    pub is_gpu: bool,
}

/// No usable adapter for `--device gpu`.
#[derive(Debug, thiserror::Error)]
#[error("no GPU adapter available through wgpu: {0}")]
pub struct NoGpu(pub String);

/// Picks a device. `auto` takes a wgpu adapter only when it is a real GPU: on a CPU adapter
/// (Mesa's llvmpipe), the Flex backend is far faster, so it is preferred there.
pub fn select(choice: DeviceChoice) -> Result<SelectedDevice, NoGpu> {
    let cpu = || SelectedDevice {
        device: Device::flex(),
        description: format!(
            "CPU (Burn Flex backend, {} threads)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        is_gpu: false,
    };
    match choice {
        DeviceChoice::Cpu => {
            let selected = cpu();
            tracing::info!("device: {} (requested)", selected.description);
            Ok(selected)
        }
        DeviceChoice::Gpu => {
            let (device, info) = init_wgpu().map_err(NoGpu)?;
            let selected = SelectedDevice {
                device,
                description: format!("GPU via wgpu: {info}"),
                is_gpu: true,
            };
            tracing::info!("device: {} (requested)", selected.description);
            Ok(selected)
        }
        DeviceChoice::Auto => match init_wgpu() {
            Ok((device, info)) if !info.contains("type Cpu") => {
                let selected = SelectedDevice {
                    device,
                    description: format!("GPU via wgpu: {info}"),
                    is_gpu: true,
                };
                tracing::info!(
                    "device: {} (auto: a hardware adapter was found)",
                    selected.description
                );
                Ok(selected)
            }
            Ok((_, info)) => {
                let selected = cpu();
                tracing::info!(
                    "device: {} (auto: the only wgpu adapter is a software one, {info}, which \
                     is much slower than the CPU backend)",
                    selected.description
                );
                Ok(selected)
            }
            Err(reason) => {
                let selected = cpu();
                tracing::info!(
                    "device: {} (auto: no wgpu adapter: {reason})",
                    selected.description
                );
                Ok(selected)
            }
        },
    }
}

/// Initialises Burn's wgpu runtime once per process and describes its adapter.
fn init_wgpu() -> Result<(Device, String), String> {
    use std::sync::OnceLock;
    static WGPU: OnceLock<Result<(Device, String), String>> = OnceLock::new();
    WGPU.get_or_init(|| {
        // Adapter discovery can panic inside drivers on broken setups; treat that as "no GPU".
        let attempt = std::panic::catch_unwind(|| Device::wgpu_options().init_with_setup());
        match attempt {
            Ok(Ok((device, setup))) => {
                let info = setup.adapter.get_info();
                let text = format!(
                    "{} ({:?}, type {:?})",
                    info.name, info.backend, info.device_type
                );
                Ok((device, text))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the wgpu runtime panicked while looking for an adapter".into()),
        }
    })
    .clone()
}
