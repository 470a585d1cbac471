//! What waits for the disk: items (frames, acknowledgements) held until their ticket is durable.

use super::Lsn;

/// Items held back until the record they depend on is durable, released in the order they
/// were held. At most `N` items; no allocation.
///
/// An item is released once the durable ticket covers its own ticket *and* every item held
/// before it has been released: frames to a peer never overtake each other, even when a later
/// frame depends on an earlier record (its ticket is lower) than the frame before it.
#[derive(Debug)]
pub struct Held<T, const N: usize> {
    items: heapless::Deque<(Lsn, T), N>,
}

impl<T, const N: usize> Default for Held<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Held<T, N> {
    /// An empty queue.
    pub const fn new() -> Self {
        Held {
            items: heapless::Deque::new(),
        }
    }

    /// Holds `item` until `ticket` is durable. Gives the item back when the queue is full: the
    /// caller syncs (which lets the queue drain) before it produces more.
    pub fn hold(&mut self, ticket: Lsn, item: T) -> Result<(), T> {
        self.items.push_back((ticket, item)).map_err(|(_, t)| t)
    }

    /// The oldest item, if `durable` covers its ticket; removed from the queue.
    pub fn release(&mut self, durable: Lsn) -> Option<T> {
        match self.items.front() {
            Some((ticket, _)) if *ticket <= durable => self.items.pop_front().map(|(_, t)| t),
            _ => None,
        }
    }

    /// The highest ticket among the held items: syncing up to it releases them all.
    pub fn needs(&self) -> Option<Lsn> {
        self.items.iter().map(|(t, _)| *t).max()
    }

    /// Forgets every held item (a crash loses them with the rest of the node's memory; the
    /// node rebuilds what to send from the log).
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// How many items are held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
