// A port of CVAT's SAM plugin worker: cvat-ai/cvat cvat-ui/plugins/sam/src/ts/inference.worker.ts
// (develop, 2025: the version whose DECODE answer carries mask, lowResMask, xtl, ytl, xbr, ybr).
// It loads the decoder from a URL once (INIT), then for each DECODE builds the six inputs from
// the plugin's body (the embedding as [1, 256, 64, 64], the clicks as [1, N, 2] and [1, N],
// orig_im_size as [h, w], the previous low-resolution mask or zeros with has_mask_input 0),
// runs the session and posts back the outputs CVAT reads by name.
import * as ort from '/assets/ort.wasm.min.mjs';

ort.env.wasm.wasmPaths = '/assets/';
let session = null;

const describe = (error) => (error instanceof Error ? error.message : String(error));

onmessage = async (event) => {
    const { action, payload } = event.data;
    if (action === 'init') {
        try {
            session = session || await ort.InferenceSession.create(payload.decoderURL);
            postMessage({ action });
        } catch (error) {
            postMessage({ action, error: describe(error) });
        }
        return;
    }
    if (!session) {
        postMessage({ action, error: 'Worker was not initialized' });
        return;
    }
    try {
        const body = payload;
        const n = body.pointLabels.length;
        const feeds = {
            image_embeddings: new ort.Tensor('float32', body.imageEmbeddings, [1, 256, 64, 64]),
            point_coords: new ort.Tensor('float32', body.pointCoords, [1, n, 2]),
            point_labels: new ort.Tensor('float32', body.pointLabels, [1, n]),
            orig_im_size: new ort.Tensor('float32', [body.height, body.width]),
            mask_input: new ort.Tensor('float32', body.maskInput || new Float32Array(256 * 256), [1, 1, 256, 256]),
            has_mask_input: new ort.Tensor('float32', [body.maskInput ? 1 : 0]),
        };
        const results = await session.run(feeds);
        const [xtl, ytl, xbr, ybr, mask, lowResMask] = await Promise.all(
            ['xtl', 'ytl', 'xbr', 'ybr', 'masks', 'low_res_masks'].map((name) => results[name].getData()),
        );
        postMessage({
            action,
            payload: {
                mask, lowResMask, xtl: Number(xtl[0]), ytl: Number(ytl[0]), xbr: Number(xbr[0]), ybr: Number(ybr[0]),
            },
        });
    } catch (error) {
        postMessage({ action, error: describe(error) });
    }
};
