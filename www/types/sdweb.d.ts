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
 * @property {string} [revision]
 * @property {string} [taesd] base URL of a TAESD repository
 * @property {boolean} [portable]
 *
 * @typedef {{ type: string, [key: string]: any }} ProgressEvent
 *
 * @typedef {object} GenerateOptions
 * @property {string} [prompt]
 * @property {string} [negativePrompt]
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
 * @property {Record<string, any>} timings
 * @property {'txt2img' | 'img2img' | 'inpaint'} mode
 * @property {number | null} strength
 *
 * @typedef {object} Generator
 * @property {Record<string, any>} info
 * @property {(options?: GenerateOptions) => Promise<GenerateResult>} generate
 * @property {() => void} simulateDeviceLoss
 * @property {() => void} dispose
 */
/**
 * Loads a model in a new worker. Options: model (base URL), onProgress(event),
 * precision ('auto' | 'f32' | 'f16'), quantize ('q8_0' | 'q4_0': layer weights quantised as they
 * load and kept quantised on the GPU; see WEIGHT_FORMATS), revision (cache key; default from the URL or 'main'),
 * taesd (base URL of a TAESD repository, e.g. madebyollin/taesd: image-sized step previews),
 * portable (true: run as on an adapter with neither `subgroups` nor `shader-f16`, f32 everywhere,
 * which is what Safari and Firefox offer; sdweb's kernels need neither).
 */
/**
 * @param {GeneratorOptions} options
 * @returns {Promise<Generator>}
 */
export function createGenerator({ model, onProgress, precision, quantize, revision, taesd, portable }?: GeneratorOptions): Promise<Generator>;
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
    revision?: string;
    /**
     * base URL of a TAESD repository
     */
    taesd?: string;
    portable?: boolean;
};
export type ProgressEvent = {
    type: string;
    [key: string]: any;
};
export type GenerateOptions = {
    prompt?: string;
    negativePrompt?: string;
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
    timings: Record<string, any>;
    mode: "txt2img" | "img2img" | "inpaint";
    strength: number | null;
};
export type Generator = {
    info: Record<string, any>;
    generate: (options?: GenerateOptions) => Promise<GenerateResult>;
    simulateDeviceLoss: () => void;
    dispose: () => void;
};
