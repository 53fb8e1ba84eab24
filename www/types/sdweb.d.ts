/**
 * Whether this browser can run sdweb: {ok, f16, reason} (reason: what the user can do).
 * @returns {Promise<{ ok: boolean, f16: boolean, reason?: string }>}
 */
export function checkWebGPU(): Promise<{
    ok: boolean;
    f16: boolean;
    reason?: string;
}>;
export function listCachedModels(): Promise<any[]>;
export function deleteCachedModel(model: any): Promise<void>;
/**
 * @typedef {object} GeneratorOptions
 * @property {string} model base URL of a diffusers repository
 * @property {(event: ProgressEvent) => void} [onProgress]
 * @property {'auto' | 'f32' | 'f16'} [precision]
 * @property {'q8_0' | 'q4_0'} [quantize]
 * @property {'sdweb' | 'burn'} [kernels] which kernels the hot ops run (default sdweb's own WGSL
 *   kernels; burn's ops are the reference they are tested against)
 * @property {string} [revision]
 * @property {string} [taesd] base URL of a TAESD repository
 * @property {boolean} [portable]
 * @property {LoraOption[]} [loras] LoRAs merged into the weights as they load (several add up)
 *
 * @typedef {object} LoraOption a LoRA `.safetensors` file (kohya/A1111 or diffusers/PEFT names)
 * @property {string} [url] where to download it (cached in IndexedDB like weights)
 * @property {Blob} [file] or the file itself (e.g. one dropped on the page)
 * @property {number} [weight] default 1
 * @property {string} [name] what `<lora:NAME:WEIGHT>` prompt tags and `Lora hashes` call it
 *   (its stem); default: the URL's or file's name
 *
 * @typedef {{ type: 'download' | 'quantize', file: string, loaded: number, total: number }
 *   | { type: 'load', file: string, index: number, count: number, loaded: number, total: number }
 *   | { type: 'compile' } | { type: 'compiled', pipelines: number, ms: number }
 *   | { type: 'step', step: number, steps: number, ms: number }
 *   | { type: 'preview', step: number, steps: number, width: number, height: number, pixels: Uint8ClampedArray }
 *   | { type: 'decode' } | { type: 'done' } | { type: 'warning', message: string }
 *   | { type: 'restart', reason: string }} ProgressEvent
 *
 * @typedef {object} Timings per-stage wall times (ms, GPU work included) and GPU dispatch counts
 * @property {number} tokenizeMs
 * @property {number} compileMs the compile pass before the first step (0 when already compiled)
 * @property {number} compiledPipelines
 * @property {number} textEncoderMs
 * @property {number} textEncoderDispatches
 * @property {number[]} unetStepsMs
 * @property {number[]} unetStepDispatches
 * @property {number} vaeDecodeMs
 * @property {number} vaeDecodeDispatches
 * @property {number} totalMs
 *
 * @typedef {object} GeneratorInfo
 * @property {string} model base URL
 * @property {string} name
 * @property {number} steps recommended steps
 * @property {number} guidance recommended guidance
 * @property {number} width native size
 * @property {number} height
 * @property {number} sizeMultiple sizes must be multiples of this
 * @property {string} scheduler the model's own scheduler
 * @property {boolean} f16 computes in f16
 * @property {'sdweb' | 'burn'} kernels
 * @property {string[]} adapterFeatures
 * @property {readonly string[]} schedulers
 *
 * @typedef {object} GenerateOptions
 * @property {string} [prompt]
 * @property {string} [negativePrompt]
 * @property {'a1111' | 'plain'} [promptSyntax] 'a1111' (default): (emphasis), (text:1.3), [less], BREAK, any length; 'plain': diffusers' text cut at 77 tokens
 * @property {number} [steps]
 * @property {number} [guidance]
 * @property {string} [scheduler] one of SCHEDULERS
 * @property {number} [width]
 * @property {number} [height]
 * @property {number} [seed]
 * @property {AbortSignal} [signal]
 * @property {ImageBitmapSource} [initImage] img2img / inpainting start image (any size)
 * @property {number} [strength] in (0, 1]
 * @property {ImageBitmapSource} [mask] inpainting: white = repaint
 * @property {number} [previewEvery] a preview after every this many steps (default 1; 0: none)
 * @property {(event: ProgressEvent) => void} [onProgress] this call's progress
 *
 * @typedef {object} GenerateResult
 * @property {Blob} png with the A1111 parameters text and the AI-generated label
 * @property {number} width
 * @property {number} height
 * @property {number} seed
 * @property {string} scheduler
 * @property {string} parameters
 * @property {Timings} timings
 * @property {'txt2img' | 'img2img' | 'inpaint'} mode
 * @property {number | null} strength
 *
 * @typedef {object} Generator
 * @property {GeneratorInfo} info
 * @property {(options?: GenerateOptions) => Promise<GenerateResult>} generate
 * @property {() => void} simulateDeviceLoss
 * @property {() => void} dispose
 */
/**
 * Loads a model in a new worker. Options: model (base URL), onProgress(event),
 * precision ('auto' | 'f32' | 'f16'), quantize ('q8_0' | 'q4_0': layer weights quantised as they
 * load and kept quantised on the GPU; see WEIGHT_FORMATS), kernels ('sdweb' | 'burn'), revision (cache key; default from the URL or 'main'),
 * taesd (base URL of a TAESD repository, e.g. madebyollin/taesd: image-sized step previews),
 * portable (true: run as on an adapter with neither `subgroups` nor `shader-f16`, f32 everywhere,
 * which is what Safari and Firefox offer; sdweb's kernels need neither).
 */
/**
 * @param {GeneratorOptions} options
 * @returns {Promise<Generator>}
 */
export function createGenerator({ model, onProgress, precision, quantize, kernels, revision, taesd, portable, loras }?: GeneratorOptions): Promise<Generator>;
export const SCHEDULERS: string[];
export const MODELS: ({
    id: string;
    name: string;
    url: string;
    bundled: boolean;
    downloadBytes: number;
    note: string;
    gpuBytes?: undefined;
    storedBytes?: undefined;
} | {
    id: string;
    name: string;
    url: string;
    downloadBytes: number;
    gpuBytes: {
        f16: number;
        q8_0: number;
        q4_0: number;
    };
    storedBytes: {
        q8_0: number;
        q4_0: number;
    };
    note: string;
    bundled?: undefined;
} | {
    id: string;
    name: string;
    url: string;
    downloadBytes: number;
    gpuBytes: {
        f16: number;
        q8_0: number;
        q4_0: number;
    };
    storedBytes: {
        q4_0: number;
        q8_0?: undefined;
    };
    note: string;
    bundled?: undefined;
})[];
/** Weight formats the page offers: q8_0/q4_0 are quantised while loading (GGUF block layouts). */
export const WEIGHT_FORMATS: {
    id: string;
    name: string;
}[];
export type GeneratorOptions = {
    /**
     * base URL of a diffusers repository
     */
    model: string;
    onProgress?: (event: ProgressEvent) => void;
    precision?: "auto" | "f32" | "f16";
    quantize?: "q8_0" | "q4_0";
    /**
     * which kernels the hot ops run (default sdweb's own WGSL
     * kernels; burn's ops are the reference they are tested against)
     */
    kernels?: "sdweb" | "burn";
    revision?: string;
    /**
     * base URL of a TAESD repository
     */
    taesd?: string;
    portable?: boolean;
    /**
     * LoRAs merged into the weights as they load (several add up)
     */
    loras?: LoraOption[];
};
/**
 * a LoRA `.safetensors` file (kohya/A1111 or diffusers/PEFT names)
 */
export type LoraOption = {
    /**
     * where to download it (cached in IndexedDB like weights)
     */
    url?: string;
    /**
     * or the file itself (e.g. one dropped on the page)
     */
    file?: Blob;
    /**
     * default 1
     */
    weight?: number;
    /**
     * what `<lora:NAME:WEIGHT>` prompt tags and `Lora hashes` call it
     * (its stem); default: the URL's or file's name
     */
    name?: string;
};
export type ProgressEvent = {
    type: "download" | "quantize";
    file: string;
    loaded: number;
    total: number;
} | {
    type: "load";
    file: string;
    index: number;
    count: number;
    loaded: number;
    total: number;
} | {
    type: "compile";
} | {
    type: "compiled";
    pipelines: number;
    ms: number;
} | {
    type: "step";
    step: number;
    steps: number;
    ms: number;
} | {
    type: "preview";
    step: number;
    steps: number;
    width: number;
    height: number;
    pixels: Uint8ClampedArray;
} | {
    type: "decode";
} | {
    type: "done";
} | {
    type: "warning";
    message: string;
} | {
    type: "restart";
    reason: string;
};
/**
 * per-stage wall times (ms, GPU work included) and GPU dispatch counts
 */
export type Timings = {
    tokenizeMs: number;
    /**
     * the compile pass before the first step (0 when already compiled)
     */
    compileMs: number;
    compiledPipelines: number;
    textEncoderMs: number;
    textEncoderDispatches: number;
    unetStepsMs: number[];
    unetStepDispatches: number[];
    vaeDecodeMs: number;
    vaeDecodeDispatches: number;
    totalMs: number;
};
export type GeneratorInfo = {
    /**
     * base URL
     */
    model: string;
    name: string;
    /**
     * recommended steps
     */
    steps: number;
    /**
     * recommended guidance
     */
    guidance: number;
    /**
     * native size
     */
    width: number;
    height: number;
    /**
     * sizes must be multiples of this
     */
    sizeMultiple: number;
    /**
     * the model's own scheduler
     */
    scheduler: string;
    /**
     * computes in f16
     */
    f16: boolean;
    kernels: "sdweb" | "burn";
    adapterFeatures: string[];
    schedulers: readonly string[];
};
export type GenerateOptions = {
    prompt?: string;
    negativePrompt?: string;
    /**
     * 'a1111' (default): (emphasis), (text:1.3), [less], BREAK, any length; 'plain': diffusers' text cut at 77 tokens
     */
    promptSyntax?: "a1111" | "plain";
    steps?: number;
    guidance?: number;
    /**
     * one of SCHEDULERS
     */
    scheduler?: string;
    width?: number;
    height?: number;
    seed?: number;
    signal?: AbortSignal;
    /**
     * img2img / inpainting start image (any size)
     */
    initImage?: ImageBitmapSource;
    /**
     * in (0, 1]
     */
    strength?: number;
    /**
     * inpainting: white = repaint
     */
    mask?: ImageBitmapSource;
    /**
     * a preview after every this many steps (default 1; 0: none)
     */
    previewEvery?: number;
    /**
     * this call's progress
     */
    onProgress?: (event: ProgressEvent) => void;
};
export type GenerateResult = {
    /**
     * with the A1111 parameters text and the AI-generated label
     */
    png: Blob;
    width: number;
    height: number;
    seed: number;
    scheduler: string;
    parameters: string;
    timings: Timings;
    mode: "txt2img" | "img2img" | "inpaint";
    strength: number | null;
};
export type Generator = {
    info: GeneratorInfo;
    generate: (options?: GenerateOptions) => Promise<GenerateResult>;
    simulateDeviceLoss: () => void;
    dispose: () => void;
};
