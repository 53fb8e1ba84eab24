#!/usr/bin/env python3
"""Writes the committed seed corpora in fuzz/seeds/<target>/ (small, valid inputs the mutations
start from). Needs only Python 3 and zlib; rerun after changing a target's input format.
    python3 fuzz/make-seeds.py
"""
import json, pathlib, random, shutil, struct, zlib

ROOT = pathlib.Path(__file__).resolve().parent
CORPUS = ROOT / "seeds"
FIXTURES = ROOT.parent / "tests" / "fixtures"
rng = random.Random(1)


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    """tensors: name -> (dtype, shape, raw bytes)."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def f32(n):
    return struct.pack(f"<{n}f", *[rng.gauss(0, 1) for _ in range(n)])


def f16(n):
    return struct.pack(f"<{n}e", *[rng.gauss(0, 1) for _ in range(n)])


st_files = {
    "mixed.safetensors": safetensors({
        "conv.weight": ("F32", [4, 2, 3, 3], f32(72)),
        "conv.bias": ("F16", [4], f16(4)),
        "norm.weight": ("BF16", [4], bytes(8)),
        "empty": ("F32", [0, 4], b""),
    }, {"format": "pt"}),
    # A UNet-named linear layer the quantiser converts (64 columns: whole q8_0/q4_0 blocks).
    "quantizable.safetensors": safetensors({
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight": ("F32", [8, 64], f32(512)),
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.bias": ("F16", [8], f16(8)),
    }),
}
for target in ["safetensors_header", "safetensors_stream", "quantize_stream"]:
    for name, data in st_files.items():
        # The stream target's first byte picks the piece sizes.
        write(target, name, (b"\x05" + data) if target == "safetensors_stream" else data)

shutil.copy(FIXTURES / "sd1_tiny_single" / "ggml_types.gguf", (CORPUS / "gguf_reader").mkdir(parents=True, exist_ok=True) or CORPUS / "gguf_reader" / "ggml_types.gguf")


def png(width, height, color_type, bit_depth, rows, interlace=0, palette=None):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    raw = b"".join(b"\x00" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace))
    if palette:
        out += chunk(b"PLTE", palette)
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


w, h = 5, 3
write("png_image", "rgb8.png", png(w, h, 2, 8, [bytes(rng.randrange(256) for _ in range(3 * w)) for _ in range(h)]))
write("png_image", "rgba8.png", png(w, h, 6, 8, [bytes(rng.randrange(256) for _ in range(4 * w)) for _ in range(h)]))
write("png_image", "gray16.png", png(w, h, 0, 16, [bytes(rng.randrange(256) for _ in range(2 * w)) for _ in range(h)]))
write("png_image", "gray-alpha8.png", png(w, h, 4, 8, [bytes(rng.randrange(256) for _ in range(2 * w)) for _ in range(h)]))
write("png_image", "palette4.png", png(w, h, 3, 4, [bytes(rng.randrange(256) for _ in range(3)) for _ in range(h)], palette=bytes(range(48))))
# Adam7 interlacing: the pass images' scanlines, 8x8 pixels of RGB so each pass has pixels.
passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
rows = []
for x0, y0, dx, dy in passes:
    pw, ph = len(range(x0, 8, dx)), len(range(y0, 8, dy))
    rows += [bytes(rng.randrange(256) for _ in range(3 * pw)) for _ in range(ph)]
write("png_image", "interlaced.png", png(8, 8, 2, 8, rows, interlace=1))

for i, text in enumerate([
    "a lighthouse on a cliff, oil painting",
    "(masterpiece:1.2), [blurry], a cat\\(s\\) BREAK sunset",
    "Ünïcödé prompt 日本語のテキスト with emoji 🐱 and <|endoftext|>",
    "",
    "!!! ??? SD 2.x pad token ! test, " * 4,
]):
    write("tokenizer", f"prompt{i}.txt", text)

for i, text in enumerate([
    "a (photo:1.3) of a [cat], ((masterpiece)), \\(not emphasis\\) BREAK a red mat",
    "(((nested (deep:0.5) [weak [weaker]]))) unbalanced ((( ]]] :1.2) (a:1e3) (b:-2) \\",
    ", ".join(f"word{i} (w{i}:1.{i % 10})" for i in range(60)),
    "BREAK BREAK (BREAK) [BREAK:1.2] (x:1.2.3) (:) () [] été 中文 " + "(" * 40 + "deep" + ")" * 40,
]):
    write("prompt_syntax", f"prompt{i}.txt", text)

for i, text in enumerate([
    "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 1, Size: 512x512, Model: v1-5",
    "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1, Size: 64x64, Denoising strength: 0.75",
    'masterpiece, 1girl\nNegative prompt: lowres\nSteps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3923525049, '
    'Size: 512x768, Model hash: 6ce0161689, Model: v1-5, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.10.1',
    'two\nline prompt\nSteps: 4, Sampler: LCM, CFG scale: 1.0, Seed: 18446744073709551615, Size: 32x32, Initial noise: "noise, v2.npy"',
]):
    write("a1111_parameters", f"params{i}.txt", text)
