//! Flow control of one direction of a relayed stream (docs/RELAY.md, "Flow control").
//!
//! The sender holds a [`SendCredit`] and sends only within it; the receiver holds a
//! [`RecvWindow`], checks that the sender kept to the window and returns credit as its
//! application consumes. The hub holds a [`SendCredit`] per direction too, fed by the DATA
//! it forwards and the CREDIT it passes back: so it holds at most a window per direction
//! of a stream, and a receiver cannot make it hold more by granting credit it never owed.

/// Why flow control failed: the other end broke the rules (close the stream, `protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// DATA beyond the credit granted.
    #[error("relay data beyond the flow-control credit")]
    BeyondCredit,
    /// CREDIT that would exceed the window (credit for bytes never sent).
    #[error("relay credit beyond the window")]
    CreditBeyondWindow,
}

/// What a sender may still send on one direction of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendCredit {
    window: u32,
    available: u32,
}

impl SendCredit {
    /// A new stream: the whole window is available.
    pub fn new(window: u32) -> Self {
        SendCredit {
            window,
            available: window,
        }
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> u32 {
        self.available
    }

    /// Bytes sent and not yet credited back (what the hub may be holding).
    pub fn in_flight(&self) -> u32 {
        self.window - self.available
    }

    /// Takes `n` bytes of credit for a DATA frame, or refuses when there is less.
    pub fn consume(&mut self, n: usize) -> Result<(), FlowError> {
        match u32::try_from(n) {
            Ok(n) if n <= self.available => {
                self.available -= n;
                Ok(())
            }
            _ => Err(FlowError::BeyondCredit),
        }
    }

    /// Adds the credit of a CREDIT frame; refuses credit for more than is in flight.
    pub fn grant(&mut self, n: u32) -> Result<(), FlowError> {
        if n > self.in_flight() {
            return Err(FlowError::CreditBeyondWindow);
        }
        self.available += n;
        Ok(())
    }
}

/// The receiving end of one direction: what arrived and is not consumed yet, and what was
/// consumed and not yet credited back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvWindow {
    window: u32,
    buffered: u32,
    unreturned: u32,
}

impl RecvWindow {
    /// A new stream with this window.
    pub fn new(window: u32) -> Self {
        RecvWindow {
            window,
            buffered: 0,
            unreturned: 0,
        }
    }

    /// Bytes received and not consumed.
    pub fn buffered(&self) -> u32 {
        self.buffered
    }

    /// Accounts a DATA frame of `n` bytes; refuses one the sender had no credit for.
    pub fn on_data(&mut self, n: usize) -> Result<(), FlowError> {
        let outstanding = u64::from(self.buffered) + u64::from(self.unreturned);
        match u32::try_from(n) {
            Ok(n) if outstanding + u64::from(n) <= u64::from(self.window) => {
                self.buffered += n;
                Ok(())
            }
            _ => Err(FlowError::BeyondCredit),
        }
    }

    /// The application consumed `n` of the buffered bytes (at most what is buffered). Returns
    /// the credit to send back once half the window waits to be returned, so a sender
    /// blocked on a full window always gets credit when the reader catches up.
    pub fn on_consumed(&mut self, n: usize) -> Option<u32> {
        let n = u32::try_from(n).unwrap_or(u32::MAX).min(self.buffered);
        self.buffered -= n;
        self.unreturned += n;
        if self.unreturned > 0 && self.unreturned >= (self.window / 2).max(1) {
            Some(std::mem::take(&mut self.unreturned))
        } else {
            None
        }
    }
}
