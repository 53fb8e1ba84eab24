export class Sha256 {
    h: Int32Array<ArrayBuffer>;
    w: Int32Array<ArrayBuffer>;
    buf: Uint8Array<ArrayBuffer>;
    bufLen: number;
    length: number;
    update(data: any): this;
    hex(): string;
    #private;
}
