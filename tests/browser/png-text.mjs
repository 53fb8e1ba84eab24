// Reads a PNG's text chunks (tEXt, zTXt, iTXt) and A1111's "parameters" text, independently of
// the Rust code that wrote them, so the tests check the format rather than our own reader.

import { inflateSync } from 'node:zlib';

export function pngTextChunks(png) {
  const signature = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);
  if (!png.subarray(0, 8).equals(signature)) throw new Error('not a PNG');
  const out = {};
  for (let at = 8; at + 8 <= png.length;) {
    const length = png.readUInt32BE(at);
    const type = png.toString('latin1', at + 4, at + 8);
    const data = png.subarray(at + 8, at + 8 + length);
    at += 12 + length;
    const nul = data.indexOf(0);
    if (type === 'tEXt') {
      out[data.toString('latin1', 0, nul)] = data.toString('latin1', nul + 1);
    } else if (type === 'zTXt') {
      out[data.toString('latin1', 0, nul)] = inflateSync(data.subarray(nul + 2)).toString('latin1');
    } else if (type === 'iTXt') {
      const keyword = data.toString('latin1', 0, nul);
      const compressed = data[nul + 1] === 1;
      const langEnd = data.indexOf(0, nul + 3);
      const transEnd = data.indexOf(0, langEnd + 1);
      const text = data.subarray(transEnd + 1);
      out[keyword] = (compressed ? inflateSync(text) : text).toString('utf8');
    }
  }
  return out;
}

// "prompt\nNegative prompt: neg\nSteps: 2, Sampler: Euler, ..." → {prompt, negativePrompt, Steps, ...}
export function a1111Parameters(text) {
  const lines = text.split('\n');
  const fields = lines.pop();
  const result = {};
  const negAt = lines.findIndex((l) => l.startsWith('Negative prompt: '));
  result.prompt = (negAt < 0 ? lines : lines.slice(0, negAt)).join('\n');
  if (negAt >= 0) result.negativePrompt = lines.slice(negAt).join('\n').slice('Negative prompt: '.length);
  for (const match of fields.matchAll(/\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/g)) {
    result[match[1]] = match[2].startsWith('"') ? JSON.parse(match[2]) : match[2];
  }
  return result;
}
