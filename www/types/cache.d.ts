export function formatBytes(n: any): string;
export class CacheError extends Error {
    /** code: 'quota' | 'integrity' | 'http' | 'network' | 'aborted'; extra: { url, status?, needed?, available? } */
    constructor(code: any, message: any, extra: any);
    code: any;
}
export class ModelCache {
    static open(dbName?: string): Promise<ModelCache>;
    constructor(db: any);
    db: any;
    pending: Map<any, any>;
    /**
     * Downloads `url` into the cache unless it is there -> { url, size, sha256, revision, commit }.
     * @param {string} url
     * @param {{ model?: string, revision?: string, signal?: AbortSignal, onProgress?: (loaded: number, total: number | null) => void }} [options]
     */
    ensure(url: string, options?: {
        model?: string;
        revision?: string;
        signal?: AbortSignal;
        onProgress?: (loaded: number, total: number | null) => void;
    }): any;
    has(url: any, revision?: string): Promise<boolean>;
    info(url: any, revision?: string): Promise<any>;
    chunks(url: any, revision?: string): AsyncGenerator<any, void, unknown>;
    bytes(url: any, revision?: string): Promise<Uint8Array<any>>;
    text(url: any, revision?: string): Promise<string>;
    /**
     * Stores a file made here (a quantised copy of a cached file) under `url`, a name that is
     * never fetched. `chunks`: async iterable of Uint8Array. All or nothing: a failure (quota,
     * a bad input) deletes what was written. -> { url, size, sha256, revision }
     */
    storeDerived(url: any, options: any, chunks: any): Promise<any>;
    /**
     * Fails with a 'quota' CacheError when `bytes` more would not fit in the origin's storage (as far
     * as the browser's estimate tells), naming `what` and `detail` (what the figure counts).
     */
    checkSpace(bytes: any, what: any, detail?: string): Promise<void>;
    /**
     * What the server says about `url` without downloading it (a HEAD request):
     * { exists: false } on 404, else { exists: true, size } (size null when not announced).
     * Throws a 'network' CacheError when unreachable and an 'http' one for other statuses.
     */
    /** @param {string} url @param {{ model?: string, signal?: AbortSignal }} [options] */
    probe(url: string, { model, signal }?: {
        model?: string;
        signal?: AbortSignal;
    }): Promise<{
        exists: boolean;
        size?: undefined;
    } | {
        exists: boolean;
        size: number;
    }>;
    remove(url: any, revision?: string): Promise<void>;
    listModels(): Promise<any[]>;
    deleteModel(model: any): Promise<void>;
    close(): void;
    #private;
}
