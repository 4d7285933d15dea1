//! `discover`: a page of the listing, newest second first, answered from the mirror and
//! written by hand from the entries' cached JSON (byte for byte `proto::Discovered`).

use m2m_proto::hub::Discover;
use serde_json::Value;

use crate::directory::{push_u64, Filter};
use crate::reply::{ok_text, push_page};
use crate::state::HubState;

impl HubState {
    /// The `discover` reply (`proto::Discovered`), written from the entries' cached text.
    pub(super) fn discover(&self, d: &Discover, cid: Option<Value>) -> String {
        let filter = Filter {
            exclude: d.exclude_id.as_deref(),
            capabilities: &d.capabilities,
            status: d.status.as_deref().filter(|s| !s.is_empty()),
            limit: d.limit as usize,
            offset: d.offset,
        };
        let page = self.directory.discover(self.now_ms(), &filter);
        ok_text(page.json.len(), cid, |out| {
            push_page(out, &page, |out| {
                out.push_str(r#","limit":"#);
                push_u64(out, u64::from(d.limit));
                out.push_str(r#","offset":"#);
                push_u64(out, d.offset);
            })
        })
    }
}
