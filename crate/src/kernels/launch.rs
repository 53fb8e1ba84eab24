//! What every WGSL kernel launch shares: the template, its id, tensor conversion, the uniform
//! and the dispatch itself.

use std::marker::PhantomData;

use burn::backend::Wgpu;
use burn::backend::wgpu::{
    CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::cubecl::ir::attributes::BufferIOAttr;
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::{KernelArguments, MetadataBindingInfo};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{DType, Shape, Tensor};

/// One WGSL file of `shaders/`; a type per file, so launch counts and logs name the op.
pub trait ShaderFile: Send + Sync + 'static {
    const TEXT: &'static str;
}

/// A WGSL file with its template parameters filled in. The parameters are the kernel's id:
/// one compiled pipeline per distinct set.
pub struct Shader<F: ShaderFile> {
    params: Vec<(&'static str, String)>,
    file: PhantomData<F>,
}

impl<F: ShaderFile> Shader<F> {
    pub fn new(dtype: DType) -> Self {
        Self {
            params: vec![("elem", wgsl_type(dtype).to_string())],
            file: PhantomData,
        }
        .with(
            "enable_f16",
            if dtype == DType::F16 {
                "enable f16;"
            } else {
                ""
            },
        )
    }

    pub fn with(mut self, name: &'static str, value: impl ToString) -> Self {
        let value = value.to_string();
        match self.params.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.params.push((name, value)),
        }
        self
    }

    /// A second element type (e.g. the weight's); f16 anywhere enables f16.
    pub fn with_type(self, name: &'static str, dtype: DType) -> Self {
        let shader = self.with(name, wgsl_type(dtype));
        if dtype == DType::F16 {
            shader.with("enable_f16", "enable f16;")
        } else {
            shader
        }
    }
}

impl<F: ShaderFile> Shader<F> {
    fn source_text(&self) -> String {
        self.params
            .iter()
            .fold(SourceTemplate::new(F::TEXT), |t, (name, value)| {
                t.register(*name, value.as_str())
            })
            .complete()
    }
}

impl<F: ShaderFile> From<&Shader<F>> for Shader<F> {
    fn from(shader: &Shader<F>) -> Self {
        Self {
            params: shader.params.clone(),
            file: PhantomData,
        }
    }
}

impl<F: ShaderFile> KernelSource for Shader<F> {
    fn source(&self) -> SourceTemplate {
        let template = self
            .params
            .iter()
            .fold(SourceTemplate::new(F::TEXT), |t, (name, value)| {
                t.register(*name, value.as_str())
            });
        // SDWEB_DUMP_WGSL=1 prints each kernel's final WGSL (naga's errors name lines of it).
        if std::env::var_os("SDWEB_DUMP_WGSL").is_some() {
            let text = Shader::<F>::from(self).source_text();
            eprintln!(
                "=== {} {:?}\n{text}",
                std::any::type_name::<F>(),
                self.params
            );
        }
        template
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.params.clone())
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

pub fn wgsl_type(dtype: DType) -> &'static str {
    if dtype == DType::F16 { "f16" } else { "f32" }
}

/// `t` as a contiguous wgpu tensor of f32/f16, or None (another backend or dtype).
pub fn cube<const D: usize>(t: &Tensor<D>) -> Option<CubeTensor> {
    if !matches!(t.dtype(), DType::F32 | DType::F16) {
        return None;
    }
    Some(into_contiguous(
        t.clone().try_into_primitive::<Wgpu>().ok()?,
    ))
}

pub fn tensor<const D: usize>(t: CubeTensor) -> Tensor<D> {
    Tensor::<D>::from_primitive::<Wgpu>(t)
}

/// A new contiguous tensor on `like`'s device.
pub fn empty(like: &CubeTensor, shape: impl Into<Shape>, dtype: DType) -> CubeTensor {
    let shape = shape.into();
    let handle = like.client.empty(shape.num_elements() * dtype.size());
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        handle,
        dtype,
    )
}

pub fn fits_u32(values: &[usize]) -> bool {
    values.iter().all(|&v| u32::try_from(v).is_ok())
}

/// Workgroups per grid dimension (WebGPU's default limit).
pub const MAX_GROUPS: usize = 65535;

/// A 1-D count of workgroups as a grid within [`MAX_GROUPS`] per dimension; kernels rebuild
/// the index from `num_workgroups`.
pub fn grid_1d(groups: usize) -> [usize; 3] {
    let x = groups.clamp(1, MAX_GROUPS);
    [x, groups.div_ceil(x), 1]
}

/// u32 fields of a kernel's uniform `Info`, packed two per u64 word (little-endian), padded to
/// the 16-byte units uniform buffers are bound in.
pub fn info_words(fields: &[u32]) -> Vec<u64> {
    let mut words: Vec<u64> = fields
        .chunks(2)
        .map(|pair| pair[0] as u64 | (pair.get(1).copied().unwrap_or(0) as u64) << 32)
        .collect();
    words.resize(words.len().next_multiple_of(2), 0);
    words
}

/// One storage binding: the name the kernel reads it by, the tensor, and the WGSL type of its
/// array's elements.
pub struct Arg<'a> {
    pub name: &'static str,
    pub tensor: &'a CubeTensor,
    pub ty: String,
}

impl<'a> Arg<'a> {
    /// Elements of the tensor's own type (f32, f16; u32 for packed words).
    pub fn new(name: &'static str, tensor: &'a CubeTensor) -> Self {
        let ty = match tensor.dtype {
            DType::F16 => "f16",
            DType::F32 => "f32",
            _ => "u32",
        };
        Self::typed(name, tensor, ty)
    }

    pub fn typed(name: &'static str, tensor: &'a CubeTensor, ty: impl Into<String>) -> Self {
        Self {
            name,
            tensor,
            ty: ty.into(),
        }
    }
}

/// Declares `args` as storage bindings 0.. and the uniform `info` after them (the order CubeCL
/// binds them in), as the kernels' `{{ bindings }}`. Every binding is `read_write`: CubeCL
/// sub-allocates small tensors in shared buffers, and one buffer bound both read-only and
/// writable in a dispatch is a WebGPU usage conflict.
fn declarations(args: &[Arg]) -> String {
    let mut text = String::new();
    for (i, arg) in args.iter().enumerate() {
        text += &format!(
            "@group(0) @binding({i}) var<storage, read_write> {}: array<{}>;\n",
            arg.name, arg.ty
        );
    }
    text + &format!(
        "@group(0) @binding({}) var<uniform> info: Info;",
        args.len()
    )
}

/// Declares and binds `inputs` then `outputs` (the kernel's `{{ bindings }}`), then the
/// uniform `info`, and enqueues `groups` workgroups of `workgroup` lanes. None when the grid
/// exceeds WebGPU's limits (the caller falls back to burn's op).
pub fn dispatch<F: ShaderFile>(
    shader: Shader<F>,
    workgroup: CubeDim,
    groups: [usize; 3],
    inputs: &[Arg],
    outputs: &[Arg],
    info: &[u32],
) -> Option<()> {
    if groups.iter().any(|&g| g == 0 || g > MAX_GROUPS) {
        return None;
    }
    let all: Vec<&Arg> = inputs.iter().chain(outputs).collect();
    let decls: Vec<Arg> = all
        .iter()
        .map(|a| Arg::typed(a.name, a.tensor, a.ty.clone()))
        .collect();
    let mut shader = shader.with("bindings", declarations(&decls));
    if decls.iter().any(|a| a.ty.contains("f16")) {
        shader = shader.with("enable_f16", "enable f16;");
    }
    let mut args = KernelArguments::new();
    for input in inputs {
        args = args.with_buffer_io(
            input.tensor.handle.clone().binding(),
            BufferIOAttr::ReadOnly,
        );
    }
    for out in outputs {
        args = args.with_buffer_io(out.tensor.handle.clone().binding(), BufferIOAttr::WriteOnly);
    }
    let args = args.with_info(MetadataBindingInfo::custom(info_words(info)));
    outputs.first()?.tensor.client.launch(
        Box::new(SourceKernel::new(shader, workgroup)),
        CubeCount::Static(groups[0] as u32, groups[1] as u32, groups[2] as u32),
        args,
    );
    Some(())
}

/// Whether `t` lives on an adapter that is no card (a CPU driver: lavapipe, SwiftShader; in
/// the browser, a fallback adapter).
pub fn on_cpu_adapter(t: &CubeTensor) -> bool {
    t.client.properties().identity.physical.is_none()
}

/// The largest buffer the device binds (its storage-binding limit, 128 MiB by WebGPU default).
pub fn max_binding_bytes(t: &CubeTensor) -> usize {
    usize::try_from(t.client.properties().memory.max_page_size).unwrap_or(usize::MAX)
}
