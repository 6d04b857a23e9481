/* Layer names as people read them, derived from the converter's population names.

A population is named after the traced node it came from: the module path with its dots as underscores
("layer1.0.relu1" -> "layer1_0_relu1"), prefixed "tsc_clip_" when clip-floor training replaced the ReLU.
The readable name drops the prefix, joins numeric parts with dots and the others with spaces:
"tsc_clip_layer1_0_relu1" -> "layer1.0 relu1", "features_3" -> "features.3", "input" -> "input".
*/

const CLIP_PREFIX = "tsc_clip_";

export function readableName(name) {
  const bare = name.startsWith(CLIP_PREFIX) ? name.slice(CLIP_PREFIX.length) : name;
  const parts = bare.split("_").filter(Boolean);
  if (!parts.length) return name;
  return parts.slice(1).reduce((text, part) => `${text}${/^\d+$/.test(part) ? "." : " "}${part}`, parts[0]);
}

/* An element showing a layer's readable name, its internal name on hover. */
export function nameElement(tag, name, className = "") {
  const node = document.createElement(tag);
  node.className = className;
  node.textContent = readableName(name);
  node.title = name;
  return node;
}
