//! dht-rpc's congestion window: at most `max` sends per 750 ms slot and `2 * max` over the
//! last four slots; answers free their slot early.

/// The sliding window.
#[derive(Debug, Clone)]
pub(crate) struct CongestionWindow {
    /// Sends per slot.
    window: [u32; 4],
    /// Current slot.
    i: usize,
    /// Sum of the slots.
    total: u32,
    /// Per-slot limit.
    max: u32,
}

impl CongestionWindow {
    pub(crate) fn new(max: u32) -> Self {
        CongestionWindow {
            window: [0; 4],
            i: 0,
            total: 0,
            max,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.total >= 2 * self.max || self.window[self.i] >= self.max
    }

    pub(crate) fn send(&mut self) {
        self.total += 1;
        self.window[self.i] += 1;
    }

    pub(crate) fn recv(&mut self) {
        if self.window[self.i] > 0 {
            self.window[self.i] -= 1;
            self.total -= 1;
        }
    }

    pub(crate) fn drain(&mut self) {
        self.i = (self.i + 1) & 3;
        self.total -= self.window[self.i];
        self.window[self.i] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_drains() {
        let mut c = CongestionWindow::new(2);
        c.send();
        assert!(!c.is_full());
        c.send();
        assert!(c.is_full());
        c.recv();
        assert!(!c.is_full());
        c.send();
        c.drain();
        assert!(!c.is_full());
        c.send();
        c.send();
        assert!(c.is_full(), "total 4 = 2 * max");
        for _ in 0..4 {
            c.drain();
        }
        assert!(!c.is_full());
    }
}
