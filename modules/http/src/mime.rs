//! `Content-Type` by file extension.

use std::path::Path;

/// The type for anything not in the table.
pub const DEFAULT: &str = "application/octet-stream";

/// The `Content-Type` value for `path`, chosen by its extension
/// (case-insensitive). Text types carry `; charset=utf-8`.
pub fn for_path(path: &Path) -> &'static str {
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
        return DEFAULT;
    };
    // Extensions in the table are at most 8 bytes: lower-case on the stack.
    let mut buf = [0u8; 8];
    if ext.len() > buf.len() {
        return DEFAULT;
    }
    let lower = &mut buf[..ext.len()];
    lower.copy_from_slice(ext.as_bytes());
    lower.make_ascii_lowercase();
    for_extension(lower)
}

fn for_extension(ext: &[u8]) -> &'static str {
    match ext {
        // Text.
        b"html" | b"htm" => "text/html; charset=utf-8",
        b"css" => "text/css; charset=utf-8",
        b"js" | b"mjs" => "text/javascript; charset=utf-8",
        b"json" | b"map" => "application/json; charset=utf-8",
        b"webmanifest" => "application/manifest+json; charset=utf-8",
        b"txt" | b"text" | b"log" => "text/plain; charset=utf-8",
        b"md" | b"markdown" => "text/markdown; charset=utf-8",
        b"csv" => "text/csv; charset=utf-8",
        b"xml" => "application/xml; charset=utf-8",
        b"rss" => "application/rss+xml; charset=utf-8",
        b"atom" => "application/atom+xml; charset=utf-8",
        b"svg" | b"svgz" => "image/svg+xml",
        // Images.
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"avif" => "image/avif",
        b"ico" => "image/x-icon",
        b"bmp" => "image/bmp",
        b"tif" | b"tiff" => "image/tiff",
        // Fonts.
        b"woff" => "font/woff",
        b"woff2" => "font/woff2",
        b"ttf" => "font/ttf",
        b"otf" => "font/otf",
        // Audio and video.
        b"mp3" => "audio/mpeg",
        b"ogg" | b"oga" => "audio/ogg",
        b"wav" => "audio/wav",
        b"flac" => "audio/flac",
        b"mp4" | b"m4v" => "video/mp4",
        b"webm" => "video/webm",
        b"ogv" => "video/ogg",
        // Applications and archives.
        b"wasm" => "application/wasm",
        b"pdf" => "application/pdf",
        b"zip" => "application/zip",
        b"gz" => "application/gzip",
        b"tar" => "application/x-tar",
        _ => DEFAULT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_extension() {
        assert_eq!(
            for_path(Path::new("a/index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(for_path(Path::new("A.PNG")), "image/png");
        assert_eq!(
            for_path(Path::new("x.min.JS")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(for_path(Path::new("f.woff2")), "font/woff2");
        assert_eq!(for_path(Path::new("app.wasm")), "application/wasm");
    }

    #[test]
    fn unknown_is_octet_stream() {
        assert_eq!(for_path(Path::new("Makefile")), DEFAULT);
        assert_eq!(for_path(Path::new("a.unknownext")), DEFAULT);
        assert_eq!(for_path(Path::new("a.verylongextension")), DEFAULT);
        assert_eq!(for_path(Path::new(".bashrc")), DEFAULT);
    }
}
