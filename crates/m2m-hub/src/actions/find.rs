//! `find`: agents with a capability, newest first, from the mirror (`proto::Found`).

use m2m_proto::hub::Find;
use serde_json::Value;

use crate::reply::{ok_text, push_page};
use crate::state::HubState;

impl HubState {
    /// The `find` reply (`proto::Found`).
    pub(super) fn find(&self, f: &Find, cid: Option<Value>) -> String {
        let page = self
            .directory
            .find(&f.capability, f.limit as usize, f.offset);
        ok_text(page.json.len(), cid, |out| push_page(out, &page, |_| {}))
    }
}
