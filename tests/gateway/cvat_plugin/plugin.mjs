// A port of the parts of CVAT's SAM plugin that build the decoder's inputs and turn its answer
// into CVAT's mask: cvat-ai/cvat cvat-ui/plugins/sam/src/ts/index.tsx (develop, 2025), functions
// getModelScale, modelData, toMatImage/onnxToImage and the `lambda.call.leave` handler:
// - the embedding is the Nuclio function's `blob` (base64 float32) for the frame;
// - clicks: the box's corners first (labels 2 and 3), then positive (1) and negative (0) points,
//   each scaled by 1024 / max(frame width, frame height); no padding point;
// - the previous answer's low-resolution mask is fed back when the clicks so far, but the last,
//   equal the previous call's clicks;
// - the answer is the mask of (xbr - xtl + 1) x (ybr - ytl + 1) values, 255 where > 0, and its
//   bounds [xtl, ytl, xbr, ybr], which CVAT draws on the frame.
const worker = new Worker('/worker.mjs', { type: 'module' });
const state = { lastClicks: [], lowResMasks: new Map(), embeddings: new Map() };

function call(action, payload) {
    return new Promise((resolve, reject) => {
        worker.onmessage = (event) => {
            if (event.data.action !== action) {
                reject(new Error(`unexpected answer ${event.data.action} to ${action}`));
            } else if (event.data.error) {
                reject(new Error(`Decoder error. ${event.data.error}`));
            } else {
                resolve(event.data.payload);
            }
        };
        worker.onerror = (error) => reject(error);
        worker.postMessage({ action, payload });
    });
}

function embeddingFromBlob(blob) {
    const bytes = Uint8Array.from(atob(blob), (c) => c.charCodeAt(0));
    return new Float32Array(bytes.buffer);
}

function modelScale(width, height) {
    return 1024 / Math.max(width, height);
}

function inputs(clicks, embedding, width, height, lowResMask) {
    const scale = modelScale(width, height);
    const pointCoords = new Float32Array(2 * clicks.length);
    const pointLabels = new Float32Array(clicks.length);
    clicks.forEach((click, i) => {
        pointCoords[2 * i] = click.x * scale;
        pointCoords[2 * i + 1] = click.y * scale;
        pointLabels[i] = click.clickType;
    });
    return { imageEmbeddings: embedding, pointCoords, pointLabels, width, height, maskInput: lowResMask };
}

function toMatImage(values, width, height) {
    const image = [];
    for (let row = 0; row < height; row++) {
        image.push(new Array(width).fill(0));
    }
    for (let i = 0; i < values.length; i++) {
        image[Math.floor(i / width)][i % width] = values[i] > 0 ? 255 : 0;
    }
    return image;
}

export async function init(decoderURL) {
    await call('init', { decoderURL });
}

// One interaction as CVAT's lambda.call.leave handles it: `result` is the function's answer (or
// null when the frame's embedding is cached), `args` the interactor's call.
export async function leave(key, result, args, frame) {
    if (result) {
        state.embeddings.set(key, embeddingFromBlob(result.blob));
    }
    const clicks = [];
    if (args.obj_bbox.length) {
        clicks.push({ clickType: 2, x: args.obj_bbox[0][0], y: args.obj_bbox[0][1] });
        clicks.push({ clickType: 3, x: args.obj_bbox[1][0], y: args.obj_bbox[1][1] });
    }
    args.pos_points.forEach(([x, y]) => clicks.push({ clickType: 1, x, y }));
    args.neg_points.forEach(([x, y]) => clicks.push({ clickType: 0, x, y }));
    const relevant = JSON.stringify(clicks.slice(0, -1)) === JSON.stringify(state.lastClicks);
    const lowResMask = relevant ? state.lowResMasks.get(key) ?? null : null;
    const answer = await call('decode', inputs(clicks, state.embeddings.get(key), frame.width, frame.height, lowResMask));
    state.lowResMasks.set(key, answer.lowResMask);
    state.lastClicks = clicks;
    const { xtl, ytl, xbr, ybr } = answer;
    return {
        mask: toMatImage(answer.mask, xbr - xtl + 1, ybr - ytl + 1), bounds: [xtl, ytl, xbr, ybr], chained: lowResMask !== null,
    };
}
