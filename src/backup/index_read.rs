//! A file index read from the bucket a range at a time ([`each_line`]): each line is
//! handed on as it is read (to be hashed, checked and used by the caller), so that a
//! read of a backup of a chain, or an incremental create over its base, holds one
//! range and one line of the index, never the whole of it (about 13 MB at 100,000
//! files). The SHA-256 the pack's inner manifest records is checked by the caller over
//! exactly the lines handed on ([`IndexReader::line`](super::incremental::IndexReader::line)).

use crate::error::{IndexError, S3Error};
use crate::s3::ObjectStore;

/// What a file index is read with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The bytes of each ranged GET.
    pub(crate) range: u64,
    /// The longest line (without its newline).
    pub(crate) max_line: usize,
    /// The largest index.
    pub(crate) max_bytes: u64,
}

/// The file index's limits: ranges of 1 MiB; lines of at most 64 KiB (an index line is
/// a path of at most 4,096 bytes, each escaped in at most 6, and three short fields);
/// at most 512 MiB (about four million files).
pub(crate) const INDEX: Limits = Limits {
    range: 1 << 20,
    max_line: 64 << 10,
    max_bytes: 512 << 20,
};

/// Which list is read, in errors.
const WHAT: &str = "file index";

/// Why a read of an index ended early.
#[derive(Debug)]
pub(crate) enum IndexRead<E> {
    /// A GET failed ([`S3Error::NotFound`] when the index is missing).
    S3(S3Error),
    /// The object is not an index this crate reads (a line or the whole too long).
    Object(IndexError),
    /// The caller refused a line.
    Each(E),
}

/// Reads the object `key` with ranged GETs of `limits.range` bytes, one at a time, and
/// gives each line to `each` in order, its newline included (the last line without one
/// when the object does not end with a newline, so that the caller sees a cut index).
/// A line split across two ranges is given whole; the object's end is the first range
/// shorter than asked for.
///
/// # Errors
/// [`IndexRead::S3`] for a failed GET, [`IndexRead::Object`] for a line longer than
/// `limits.max_line` or an object longer than `limits.max_bytes` (naming the key), and
/// [`IndexRead::Each`] with the first error of `each` (nothing more is read).
pub(crate) async fn each_line<E>(
    store: &(impl ObjectStore + ?Sized),
    key: &str,
    limits: Limits,
    mut each: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), IndexRead<E>> {
    let range = limits.range.max(1);
    let too_long = |line: u64| {
        IndexRead::Object(IndexError::LineTooLong {
            what: WHAT,
            key: key.to_string(),
            line,
            limit: limits.max_line,
        })
    };
    let mut carry: Vec<u8> = Vec::new();
    let (mut offset, mut lines) = (0_u64, 0_u64);
    loop {
        let chunk = store
            .get_object_range(key, offset, range)
            .await
            .map_err(IndexRead::S3)?;
        offset += chunk.len() as u64;
        if offset > limits.max_bytes {
            return Err(IndexRead::Object(IndexError::TooLarge {
                what: WHAT,
                key: key.to_string(),
                limit: limits.max_bytes,
            }));
        }
        let end = (chunk.len() as u64) < range;
        let mut rest = &chunk[..];
        while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
            let (head, tail) = rest.split_at(newline + 1);
            rest = tail;
            lines += 1;
            if carry.len() + newline > limits.max_line {
                return Err(too_long(lines));
            }
            if carry.is_empty() {
                each(head).map_err(IndexRead::Each)?;
            } else {
                carry.extend_from_slice(head);
                each(&carry).map_err(IndexRead::Each)?;
                carry.clear();
            }
        }
        if carry.len() + rest.len() > limits.max_line {
            return Err(too_long(lines + 1));
        }
        carry.extend_from_slice(rest);
        if end {
            if !carry.is_empty() {
                each(&carry).map_err(IndexRead::Each)?;
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::s3::MemoryStore;

    async fn store_with(body: &[u8]) -> MemoryStore {
        let store = MemoryStore::new("");
        store
            .put_object("i", body.to_vec(), "x", &HashMap::new())
            .await
            .unwrap();
        store
    }

    fn limits(range: u64, max_line: usize) -> Limits {
        Limits {
            range,
            max_line,
            max_bytes: 1 << 20,
        }
    }

    async fn lines(store: &MemoryStore, limits: Limits) -> Result<Vec<Vec<u8>>, IndexRead<()>> {
        let mut got = Vec::new();
        each_line(store, "i", limits, |line| {
            got.push(line.to_vec());
            Ok(())
        })
        .await
        .map(|()| got)
    }

    #[tokio::test]
    async fn lines_split_across_ranges_arrive_whole_whatever_the_range() {
        let body = b"one\ntwo two\n\nthree three three\nfour";
        let store = store_with(body).await;
        let want: Vec<&[u8]> = vec![
            b"one\n",
            b"two two\n",
            b"\n",
            b"three three three\n",
            b"four",
        ];
        for range in [1, 2, 3, 4, 5, 7, 8, 17, 35, 36, 1000] {
            let got = lines(&store, limits(range, 100)).await.unwrap();
            assert_eq!(got, want, "range {range}");
        }
        // An object that ends on a range's end: the next, empty range ends it.
        let store = store_with(b"ab\ncd\n").await;
        let got = lines(&store, limits(3, 100)).await.unwrap();
        assert_eq!(got, vec![b"ab\n".to_vec(), b"cd\n".to_vec()]);
    }

    #[tokio::test]
    async fn an_over_long_line_is_refused_naming_the_key_and_the_line() {
        let mut body = b"short\n".to_vec();
        body.extend(std::iter::repeat_n(b'x', 50));
        body.extend_from_slice(b"\nafter\n");
        let store = store_with(&body).await;
        for range in [4, 16, 64, 1000] {
            let Err(IndexRead::Object(e)) = lines(&store, limits(range, 40)).await else {
                panic!("range {range}: an over-long line was accepted");
            };
            let text = e.to_string();
            assert!(
                text.contains("file index i line 2") && text.contains("longer than 40 bytes"),
                "range {range}: {text}"
            );
        }
        // The same line without its newline at the object's end.
        let store = store_with(&body[..56]).await;
        let Err(IndexRead::Object(e)) = lines(&store, limits(16, 40)).await else {
            panic!("an over-long last line was accepted");
        };
        assert!(e.to_string().contains("line 2"), "{e}");
        // A line of exactly the limit is read.
        let got = lines(&store, limits(16, 50)).await.unwrap();
        assert_eq!(got.len(), 2);
    }

    #[tokio::test]
    async fn a_missing_or_too_large_object_and_a_refused_line_end_the_read() {
        let store = store_with(b"a\nb\nc\n").await;
        let missing = each_line(&store, "nope", limits(4, 10), |_| Ok::<_, ()>(())).await;
        assert!(
            matches!(missing, Err(IndexRead::S3(S3Error::NotFound { .. }))),
            "{missing:?}"
        );
        let small = Limits {
            range: 2,
            max_line: 10,
            max_bytes: 4,
        };
        let Err(IndexRead::Object(e)) = lines(&store, small).await else {
            panic!("a too large index was read");
        };
        assert!(
            e.to_string()
                .contains("file index i is longer than 4 bytes"),
            "{e}"
        );
        let mut seen = 0;
        let refused = each_line(&store, "i", limits(4, 10), |line| {
            seen += 1;
            if line == b"b\n" { Err("no b") } else { Ok(()) }
        })
        .await;
        assert!(
            matches!(refused, Err(IndexRead::Each("no b"))),
            "{refused:?}"
        );
        assert_eq!(seen, 2, "nothing after the refused line is given");
    }
}
