//! Bounded capture of one output stream: the first half of the budget keeps the head,
//! the second half is a ring keeping the tail; everything between is counted, not kept.
//! Memory is at most the budget, whatever the command writes.

/// Keeps the head and the tail of a stream within a byte budget.
pub struct OutputCapture {
    head: Vec<u8>,
    head_cap: usize,
    tail: TailRing,
    total: u64,
}

impl OutputCapture {
    /// A capture keeping at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        let head_cap = budget / 2;
        OutputCapture {
            head: Vec::new(),
            head_cap,
            tail: TailRing::new(budget - head_cap),
            total: 0,
        }
    }

    /// Feeds the next chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let take = (self.head_cap - self.head.len()).min(chunk.len());
        self.head.extend_from_slice(&chunk[..take]);
        self.tail.push(&chunk[take..]);
    }

    /// The kept bytes (head then tail) and the number of bytes dropped between them.
    pub fn finish(self) -> (Vec<u8>, u64) {
        let mut kept = self.head;
        self.tail.append_to(&mut kept);
        let dropped = self.total - kept.len() as u64;
        (kept, dropped)
    }
}

/// The last `cap` bytes pushed. Grows on demand so short outputs cost little.
struct TailRing {
    cap: usize,
    buf: Vec<u8>,
    /// Once `buf` is full: where the oldest byte is, and the next write goes.
    next: usize,
}

impl TailRing {
    fn new(cap: usize) -> Self {
        TailRing {
            cap,
            buf: Vec::new(),
            next: 0,
        }
    }

    fn push(&mut self, mut data: &[u8]) {
        if self.cap == 0 || data.is_empty() {
            return;
        }
        if data.len() >= self.cap {
            self.buf.clear();
            self.buf.extend_from_slice(&data[data.len() - self.cap..]);
            self.next = 0;
            return;
        }
        let room = self.cap - self.buf.len();
        if room > 0 {
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            self.next = 0;
        }
        while !data.is_empty() {
            let n = (self.cap - self.next).min(data.len());
            self.buf[self.next..self.next + n].copy_from_slice(&data[..n]);
            self.next = (self.next + n) % self.cap;
            data = &data[n..];
        }
    }

    fn append_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.buf[self.next..]);
        out.extend_from_slice(&self.buf[..self.next]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the capture must equal: head and tail of the whole stream.
    fn model(all: &[u8], budget: usize) -> (Vec<u8>, u64) {
        if all.len() <= budget {
            return (all.to_vec(), 0);
        }
        let head = budget / 2;
        let tail = budget - head;
        let mut kept = all[..head].to_vec();
        kept.extend_from_slice(&all[all.len() - tail..]);
        (kept, (all.len() - budget) as u64)
    }

    #[test]
    fn matches_the_model_for_many_chunkings() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for budget in [0usize, 1, 2, 7, 64, 1000] {
            for _ in 0..50 {
                let len = (next() % 3000) as usize;
                let all: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let mut capture = OutputCapture::new(budget);
                let mut rest = &all[..];
                while !rest.is_empty() {
                    let n = ((next() % 300) as usize + 1).min(rest.len());
                    capture.push(&rest[..n]);
                    rest = &rest[n..];
                }
                assert_eq!(
                    capture.finish(),
                    model(&all, budget),
                    "budget {budget}, len {len}"
                );
            }
        }
    }

    #[test]
    fn short_output_is_kept_whole() {
        let mut capture = OutputCapture::new(1 << 20);
        capture.push(b"hello\n");
        assert_eq!(capture.finish(), (b"hello\n".to_vec(), 0));
    }
}
