//! Layer blob decompression, chosen by the blob's magic bytes rather than its media type:
//! Docker and OCI name the same formats differently, and `docker save` mislabels nothing only
//! because it labels nothing.

use std::io::{BufRead, BufReader, Read};

use crate::error::{ImageError, Result};

/// Compression of a layer blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`tar+gzip`, Docker's `rootfs.diff.tar.gzip`).
    Gzip,
    /// zstd (`tar+zstd`).
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Wraps a layer blob in the right decoder.
pub(crate) fn decompressed<'a>(
    reader: impl Read + 'a,
) -> Result<(Compression, Box<dyn Read + 'a>)> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered
        .fill_buf()
        .map_err(|e| ImageError::BadTar(format!("reading layer: {e}")))?;
    if head.starts_with(GZIP_MAGIC) {
        // Multi-member gzip is legal (and pigz-style writers produce it).
        return Ok((
            Compression::Gzip,
            Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        ));
    }
    if head.starts_with(ZSTD_MAGIC) {
        return zstd_decoder(buffered);
    }
    Ok((Compression::None, Box::new(buffered)))
}

#[cfg(feature = "zstd")]
fn zstd_decoder<'a>(
    reader: BufReader<impl Read + 'a>,
) -> Result<(Compression, Box<dyn Read + 'a>)> {
    let decoder = zstd::stream::read::Decoder::with_buffer(reader)
        .map_err(|e| ImageError::BadTar(format!("zstd: {e}")))?;
    Ok((Compression::Zstd, Box::new(decoder)))
}

#[cfg(not(feature = "zstd"))]
fn zstd_decoder<'a>(_: BufReader<impl Read + 'a>) -> Result<(Compression, Box<dyn Read + 'a>)> {
    Err(ImageError::BadTar(
        "zstd-compressed layer, but kiln-image was built without the `zstd` feature".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn sniffs_each_format_and_round_trips() {
        let data = b"hello layer".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        for (bytes, want) in [(data.clone(), Compression::None), (gz, Compression::Gzip)] {
            let (kind, mut r) = decompressed(&bytes[..]).unwrap();
            assert_eq!(kind, want);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
        #[cfg(feature = "zstd")]
        {
            let z = zstd::encode_all(&data[..], 3).unwrap();
            let (kind, mut r) = decompressed(&z[..]).unwrap();
            assert_eq!(kind, Compression::Zstd);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }
}
