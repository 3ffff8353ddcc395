// Masks on a canvas: COCO run-length encodings (pycocotools' compressed counts, the API's
// MASK_FORMAT_RLE) decoded to pixels, drawn in distinct colours over the image, with a map of
// which mask is on top at each pixel for hover.

export function rleCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0;
    let k = 0;
    let more = 1;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p += 1;
      k += 1;
      if (!more && c & 0x10) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// A mask as one byte per pixel, row-major, from COCO RLE (column-major runs starting with zeros).
export function decodeRle(rle) {
  const [height, width] = rle.size.map(Number);
  const pixels = new Uint8Array(height * width);
  let at = 0;
  let value = 0;
  for (const run of rleCounts(rle.counts)) {
    if (value) {
      for (let i = at; i < at + run; i += 1) {
        const column = Math.floor(i / height);
        pixels[(i - column * height) * width + column] = 1;
      }
    }
    at += run;
    value ^= 1;
  }
  return { width, height, pixels };
}

export function colour(index) {
  const hue = (index * 137.508) % 360;
  return `hsl(${hue.toFixed(1)}, 80%, 50%)`;
}

function rgb(index) {
  const probe = document.createElement("canvas").getContext("2d");
  probe.fillStyle = colour(index);
  const hex = probe.fillStyle;
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

// Draw `image` and the visible masks (largest first, so small ones stay on top) on `canvas`;
// returns the top mask's index at each pixel (-1 where none).
export function drawMasks(canvas, image, masks, visible, highlight = -1) {
  canvas.width = image.width;
  canvas.height = image.height;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const frame = context.getImageData(0, 0, canvas.width, canvas.height);
  const top = new Int32Array(canvas.width * canvas.height).fill(-1);
  const order = masks.map((_, i) => i).filter((i) => visible[i]);
  order.sort((a, b) => masks[b].area - masks[a].area);
  for (const index of order) {
    const mask = masks[index];
    const [r, g, b] = rgb(index);
    const alpha = index === highlight ? 0.75 : 0.45;
    const { pixels } = mask.decoded;
    for (let p = 0; p < pixels.length; p += 1) {
      if (!pixels[p]) continue;
      const o = p * 4;
      frame.data[o] = frame.data[o] * (1 - alpha) + r * alpha;
      frame.data[o + 1] = frame.data[o + 1] * (1 - alpha) + g * alpha;
      frame.data[o + 2] = frame.data[o + 2] * (1 - alpha) + b * alpha;
      top[p] = index;
    }
  }
  context.putImageData(frame, 0, 0);
  return top;
}

export function loadImage(file) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(file);
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`${file.name} is not an image this browser can show`));
    image.src = url;
  });
}

// The COCO instances document of one image's masks, as the API returned them.
export function cocoDocument(fileName, width, height, masks) {
  return {
    images: [{ id: 1, file_name: fileName, width, height }],
    annotations: masks.map((m, i) => ({
      id: i + 1,
      image_id: 1,
      category_id: 1,
      segmentation: { size: m.rle.size.map(Number), counts: m.rle.counts },
      area: Number(m.area),
      bbox: m.bbox.map(Number),
      iscrowd: 0,
      predicted_iou: m.predicted_iou,
      stability_score: m.stability_score,
    })),
    categories: [{ id: 1, name: "object", supercategory: "object" }],
  };
}
