//! LZ4 *block* helpers shared by the current page encoding (one raw block per page)
//! and the legacy one (blocks inside a frame): compressed-size bound, decompression
//! into a page buffer, and a strictness check on the block's last sequence.

use super::LtxError;

/// Largest compressed block accepted for (and produced from) a page of `page_size`
/// bytes. lz4_flex's bound (~1.1 × input + 20) is above any valid LZ4 encoding of
/// `page_size` bytes (at most `n + n/255 + 16`), so every real block fits.
pub fn max_compressed_size(page_size: usize) -> usize {
    lz4_flex::block::get_maximum_output_size(page_size)
}

/// Decompresses one block into `page`, which must come out exactly full.
pub fn decompress_page(block: &[u8], page: &mut [u8]) -> Result<(), LtxError> {
    let n = lz4_flex::block::decompress_into(block, page)
        .map_err(|e| LtxError::Corrupt(format!("LZ4 block does not decompress: {e}")))?;
    if n != page.len() {
        return Err(LtxError::Corrupt(format!(
            "LZ4 block decompresses to {n} bytes, the page size is {}",
            page.len()
        )));
    }
    check_last_sequence(block)
}

/// Walks the block's sequences and requires the last one to be literals only with a
/// zero match-length nibble, as every LZ4 compressor writes it.
///
/// Decoders ignore that nibble, and the LTX file checksum only covers *uncompressed*
/// bytes, so without this check a flipped nibble would go unnoticed. (Other "don't
/// care" encodings, such as a match offset pointing at an identical earlier run, are
/// inherently undetectable: they decode to the same bytes.)
pub fn check_last_sequence(block: &[u8]) -> Result<(), LtxError> {
    let at = last_token(block)?;
    if block.get(at).is_some_and(|t| t & 0x0f != 0) {
        return Err(LtxError::Corrupt(
            "malformed LZ4 block: last sequence has a match length".into(),
        ));
    }
    Ok(())
}

/// Index of the token of the block's last sequence (the one whose literals end the block).
fn last_token(block: &[u8]) -> Result<usize, LtxError> {
    let bad = |what: &str| LtxError::Corrupt(format!("malformed LZ4 block: {what}"));
    let len = block.len();
    let mut i = 0usize;
    loop {
        let at = i;
        let token = *block.get(i).ok_or_else(|| bad("missing token"))?;
        i += 1;
        let mut lit = usize::from(token >> 4);
        if lit == 15 {
            loop {
                let b = *block
                    .get(i)
                    .ok_or_else(|| bad("literal length runs past the end"))?;
                i += 1;
                lit = lit.saturating_add(usize::from(b));
                if b != 255 {
                    break;
                }
            }
        }
        i = i.saturating_add(lit);
        if i > len {
            return Err(bad("literals run past the end"));
        }
        if i == len {
            return Ok(at);
        }
        i += 2; // match offset
        if i > len {
            return Err(bad("match offset runs past the end"));
        }
        if token & 0x0f == 15 {
            loop {
                let b = *block
                    .get(i)
                    .ok_or_else(|| bad("match length runs past the end"))?;
                i += 1;
                if b != 255 {
                    break;
                }
            }
        }
        if i >= len {
            return Err(bad("block ends with a match"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; max_compressed_size(data.len())];
        let n = lz4_flex::block::compress_into(data, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn compressor_output_passes() {
        let mut seed = 1u32;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        let mixed: Vec<u8> = (0..4096u32)
            .map(|i| if i % 300 < 150 { 0 } else { (i % 7) as u8 })
            .collect();
        for data in [vec![0u8; 512], vec![7u8; 65536], random, mixed] {
            let block = compress(&data);
            let mut page = vec![0u8; data.len()];
            decompress_page(&block, &mut page).unwrap();
            assert_eq!(page, data);
        }
    }

    #[test]
    fn rejects_flipped_last_nibble_and_size_mismatch() {
        let data = vec![3u8; 1024];
        let mut block = compress(&data);
        let mut page = vec![0u8; 1024];
        // Flip the low nibble of the last sequence's token.
        let last_token = last_token(&block).unwrap();
        assert_eq!(block[last_token] & 0x0f, 0);
        block[last_token] |= 0x01;
        assert!(
            lz4_flex::block::decompress_into(&block, &mut page).is_ok(),
            "lz4_flex ignores the nibble"
        );
        assert!(matches!(
            decompress_page(&block, &mut page),
            Err(LtxError::Corrupt(_))
        ));
        let block = compress(&data);
        let mut small = vec![0u8; 512];
        assert!(decompress_page(&block, &mut small).is_err());
        let mut big = vec![0u8; 2048];
        assert!(decompress_page(&block, &mut big).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut page = vec![0u8; 512];
        assert!(check_last_sequence(&[]).is_err());
        for len in 0..64usize {
            for fill in [0u8, 0x0f, 0xf0, 0xff, 0x11] {
                let b = vec![fill; len];
                let _ = check_last_sequence(&b);
                let _ = decompress_page(&b, &mut page);
            }
        }
    }
}
