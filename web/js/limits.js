// Ark's documented limits, mirrored for checks in the browser before anything is sent.
// The source of truth is chalicelib/ark/limits.py: change a limit there first, then here.

export const PROMPT_MAX_CHARS = 4000;

export const IMAGE_SIZE_PRESETS = ["2K", "4K"];
export const IMAGE_MIN_PIXELS = 2560 * 1440; // 3,686,400
export const IMAGE_MAX_PIXELS = 4096 * 4096; // 16,777,216
export const IMAGE_MIN_ASPECT = 1 / 16;
export const IMAGE_MAX_ASPECT = 16;
export const IMAGE_MAX_REFERENCE_IMAGES = 14;
export const IMAGE_MAX_IMAGES = 15; // group generation count, 1..15
export const IMAGE_MAX_TOTAL_IMAGES = 15; // reference images + generated images
export const IMAGE_INPUT_FORMATS = ["jpeg", "png", "webp", "bmp", "tiff", "gif"];
export const IMAGE_INPUT_MIN_SIDE_EXCLUSIVE = 14;
export const IMAGE_INPUT_MAX_PIXELS = 6000 * 6000;
export const IMAGE_INPUT_MAX_BYTES = 10 * 1024 * 1024;

export const VIDEO_RESOLUTIONS = ["480p", "720p", "1080p"];
export const VIDEO_DEFAULT_RESOLUTION = "1080p";
export const VIDEO_RATIOS = ["16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"];
export const VIDEO_MIN_DURATION = 2;
export const VIDEO_MAX_DURATION = 12;
export const VIDEO_DEFAULT_DURATION = 5;
export const VIDEO_MIN_SEED = -1;
export const VIDEO_MAX_SEED = 2 ** 32 - 1;
export const VIDEO_INPUT_MIN_ASPECT_EXCLUSIVE = 0.4;
export const VIDEO_INPUT_MAX_ASPECT_EXCLUSIVE = 2.5;
export const VIDEO_INPUT_MIN_SIDE_EXCLUSIVE = 300;
export const VIDEO_INPUT_MAX_SIDE_EXCLUSIVE = 6000;
export const VIDEO_INPUT_MAX_BYTES = 30 * 1024 * 1024;

// Platform choice, not an Ark limit: small files travel inline, larger ones through a presigned S3 upload.
export const INLINE_UPLOAD_MAX_BYTES = 256 * 1024;
