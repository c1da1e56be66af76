//! The legacy page encoding (ltx v0.5.0/v0.5.1, Litestream 0.5.0-0.5.15): after a
//! `pgno | flags=0` page header comes one complete LZ4 *frame* per page, with no length
//! prefix. Without `Seek` the frame is delimited by parsing its structure (magic,
//! descriptor, optional content size, header checksum, blocks up to the end mark,
//! optional block and content checksums); the collected bytes are then decompressed
//! by a reused `lz4_flex::frame::FrameDecoder`.

use std::io::Read;

use lz4_flex::frame::FrameDecoder;

use super::LtxError;
use super::lz4block::check_last_sequence;

const FRAME_MAGIC: u32 = 0x184D_2204;
const FLG_VERSION_MASK: u8 = 0b1100_0000;
const FLG_VERSION_01: u8 = 0b0100_0000;
const FLG_BLOCK_CHECKSUM: u8 = 0b0001_0000;
const FLG_CONTENT_SIZE: u8 = 0b0000_1000;
const FLG_CONTENT_CHECKSUM: u8 = 0b0000_0100;
const FLG_RESERVED: u8 = 0b0000_0010;
const FLG_DICT_ID: u8 = 0b0000_0001;
const BD_RESERVED: u8 = 0b1000_1111;
const BLOCK_UNCOMPRESSED: u32 = 0x8000_0000;

/// Largest frame accepted for one page. A real frame for `page_size` bytes is a
/// header (<= 15 bytes), one block (<= page_size + page_size/255 + 16 plus 8 bytes of
/// size and checksum), the end mark and the content checksum.
pub fn max_frame_size(page_size: usize) -> usize {
    2 * page_size + 4096
}

/// The frame bytes of the current page; the reader the `FrameDecoder` pulls from.
#[derive(Default)]
struct FrameBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl Read for FrameBuf {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        let n = rest.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n;
        Ok(n)
    }
}

/// Reusable state for decoding legacy pages of one file.
pub struct LegacyPages {
    dec: FrameDecoder<FrameBuf>,
    /// FLG and BD of the frame the decoder was set up for. `FrameDecoder` sizes its
    /// buffers per frame and (in debug builds) asserts they keep that size, so a
    /// frame with a different descriptor gets a fresh decoder.
    desc: Option<(u8, u8)>,
}

impl Default for LegacyPages {
    fn default() -> Self {
        LegacyPages {
            dec: FrameDecoder::new(FrameBuf::default()),
            desc: None,
        }
    }
}

fn pull<R: Read>(r: &mut R, buf: &mut Vec<u8>, n: usize, limit: usize) -> Result<usize, LtxError> {
    let start = buf.len();
    let end = start
        .checked_add(n)
        .filter(|&e| e <= limit)
        .ok_or_else(|| {
            LtxError::Corrupt(format!("legacy page: LZ4 frame larger than {limit} bytes"))
        })?;
    buf.resize(end, 0);
    let dst = buf.get_mut(start..).unwrap_or(&mut []);
    r.read_exact(dst)
        .map_err(|e| LtxError::from_io(&e, "legacy page LZ4 frame"))?;
    Ok(start)
}

fn le32(buf: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = buf.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

/// Reads one LZ4 frame from `r` into `buf` (cleared first), checking its structure.
/// Returns the frame descriptor (FLG, BD).
fn delimit<R: Read>(r: &mut R, buf: &mut Vec<u8>, page_size: usize) -> Result<(u8, u8), LtxError> {
    let bad = |what: &str| LtxError::Corrupt(format!("legacy page: {what}"));
    let limit = max_frame_size(page_size);
    buf.clear();
    pull(r, buf, 4, limit)?;
    if le32(buf, 0) != FRAME_MAGIC {
        return Err(bad("not an LZ4 frame (bad magic)"));
    }
    let at = pull(r, buf, 2, limit)?;
    let (flg, bd) = match buf.get(at..at + 2) {
        Some(&[f, b]) => (f, b),
        _ => return Err(bad("missing frame descriptor")),
    };
    if flg & FLG_VERSION_MASK != FLG_VERSION_01 {
        return Err(bad("unsupported LZ4 frame version"));
    }
    if flg & FLG_RESERVED != 0 || bd & BD_RESERVED != 0 {
        return Err(bad("reserved LZ4 frame descriptor bits set"));
    }
    if flg & FLG_DICT_ID != 0 {
        return Err(bad("LZ4 dictionaries are not supported"));
    }
    let max_block = match (bd >> 4) & 0x7 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        _ => return Err(bad("invalid LZ4 block maximum size")),
    };
    if flg & FLG_CONTENT_SIZE != 0 {
        pull(r, buf, 8, limit)?;
    }
    pull(r, buf, 1, limit)?; // header checksum, verified by FrameDecoder
    loop {
        let at = pull(r, buf, 4, limit)?;
        let word = le32(buf, at);
        if word == 0 {
            break; // end mark
        }
        let len = (word & !BLOCK_UNCOMPRESSED) as usize;
        if len > max_block {
            return Err(bad("LZ4 block larger than the frame's maximum"));
        }
        let start = pull(r, buf, len, limit)?;
        if word & BLOCK_UNCOMPRESSED == 0 {
            check_last_sequence(buf.get(start..).unwrap_or(&[]))?;
        }
        if flg & FLG_BLOCK_CHECKSUM != 0 {
            pull(r, buf, 4, limit)?;
        }
    }
    if flg & FLG_CONTENT_CHECKSUM != 0 {
        pull(r, buf, 4, limit)?;
    }
    Ok((flg, bd))
}

impl LegacyPages {
    /// Reads one legacy frame from `r` and decompresses it into `page`, which must
    /// come out exactly full. Returns the number of frame bytes consumed.
    pub fn read_page<R: Read>(&mut self, r: &mut R, page: &mut [u8]) -> Result<u64, LtxError> {
        let result = self.read_page_inner(r, page);
        if result.is_err() {
            // The decoder may be mid-frame: start from a fresh one next time.
            self.desc = None;
        }
        result
    }

    fn read_page_inner<R: Read>(&mut self, r: &mut R, page: &mut [u8]) -> Result<u64, LtxError> {
        let desc = {
            let fb = self.dec.get_mut();
            fb.pos = 0;
            delimit(r, &mut fb.buf, page.len())?
        };
        if self.desc != Some(desc) {
            let fresh = FrameDecoder::new(FrameBuf::default());
            let fb = std::mem::replace(&mut self.dec, fresh).into_inner();
            self.dec = FrameDecoder::new(fb);
            self.desc = Some(desc);
        }
        let frame_len = self.dec.get_ref().buf.len();
        let corrupt = |e: std::io::Error| {
            LtxError::Corrupt(format!("legacy page: LZ4 frame does not decode: {e}"))
        };
        self.dec.read_exact(page).map_err(corrupt)?;
        let mut probe = [0u8; 1];
        match self.dec.read(&mut probe) {
            Ok(0) => {}
            Ok(_) => {
                return Err(LtxError::Corrupt(
                    "legacy page: LZ4 frame holds more than one page".into(),
                ));
            }
            Err(e) => return Err(corrupt(e)),
        }
        if self.dec.get_ref().pos != frame_len {
            return Err(LtxError::Corrupt(
                "legacy page: LZ4 frame not fully consumed".into(),
            ));
        }
        Ok(frame_len as u64)
    }
}

/// Writes `data` as one LZ4 frame the way the legacy Go writer did (independent
/// 64 KiB blocks, content checksum). Test support only.
#[cfg(test)]
pub(crate) fn encode_frame(data: &[u8]) -> Vec<u8> {
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    use std::io::Write;
    let info = FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Independent)
        .content_checksum(true);
    let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| {
                if i % 97 < 40 {
                    seed
                } else {
                    (i as u8).wrapping_mul(seed | 1)
                }
            })
            .collect()
    }

    #[test]
    fn decodes_consecutive_frames_from_one_stream() {
        let pages = [page(1, 4096), page(2, 4096), vec![0u8; 4096]];
        let mut stream = Vec::new();
        let mut lens = Vec::new();
        for p in &pages {
            let f = encode_frame(p);
            lens.push(f.len() as u64);
            stream.extend_from_slice(&f);
        }
        stream.extend_from_slice(b"NEXT");
        let mut r = &stream[..];
        let mut lp = LegacyPages::default();
        let mut out = vec![0u8; 4096];
        for (p, len) in pages.iter().zip(&lens) {
            assert_eq!(lp.read_page(&mut r, &mut out).unwrap(), *len);
            assert_eq!(&out, p);
        }
        assert_eq!(r, b"NEXT");
    }

    #[test]
    fn optional_fields_and_other_descriptors() {
        use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
        use std::io::Write;
        let data = page(9, 2048);
        let infos = [
            FrameInfo::new()
                .content_size(Some(2048))
                .block_checksums(true),
            FrameInfo::new()
                .block_size(BlockSize::Max256KB)
                .block_mode(BlockMode::Linked),
            FrameInfo::new()
                .block_size(BlockSize::Max4MB)
                .content_checksum(true),
            FrameInfo::new(),
        ];
        let mut lp = LegacyPages::default();
        let mut out = vec![0u8; 2048];
        for info in infos {
            let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
            enc.write_all(&data).unwrap();
            let f = enc.finish().unwrap();
            let mut r = &f[..];
            assert_eq!(lp.read_page(&mut r, &mut out).unwrap(), f.len() as u64);
            assert_eq!(out, data);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn rejects_wrong_sizes_and_corruption() {
        let mut lp = LegacyPages::default();
        // Incompressible content: a flipped match offset in a compressible block can
        // decode to identical bytes, which no checksum could notice.
        let mut seed = 7u32;
        let noise: Vec<u8> = (0..1024)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        let f = encode_frame(&noise);
        let mut small = vec![0u8; 512];
        assert!(lp.read_page(&mut &f[..], &mut small).is_err());
        let mut big = vec![0u8; 2048];
        assert!(lp.read_page(&mut &f[..], &mut big).is_err());
        let mut out = vec![0u8; 1024];
        assert!(lp.read_page(&mut &f[..], &mut out).is_ok());
        for n in 0..f.len() {
            assert_eq!(
                lp.read_page(&mut &f[..n], &mut out),
                Err(LtxError::Truncated("legacy page LZ4 frame"))
            );
        }
        for i in 0..f.len() {
            for bit in [0x01u8, 0x80] {
                let mut g = f.clone();
                g[i] ^= bit;
                let mut r = &g[..];
                match lp.read_page(&mut r, &mut out) {
                    Err(_) => {}
                    Ok(_) => panic!("flip of bit {bit:#x} at {i} not detected"),
                }
            }
        }
        // Decoding still works after failures.
        assert!(lp.read_page(&mut &f[..], &mut out).is_ok());
    }
}
