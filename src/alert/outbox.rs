//! Temporary stand-in; replaced by the outbox.
#[derive(Clone)]
pub struct Outbox;
pub enum State {
    Pending,
    Delivered,
    Failed,
}
impl State {
    pub fn parse(s: &str) -> Option<State> {
        match s {
            "pending" => Some(State::Pending),
            "delivered" => Some(State::Delivered),
            "failed" => Some(State::Failed),
            _ => None,
        }
    }
}
impl Outbox {
    pub fn list_json(
        &self,
        _s: Option<State>,
        _l: usize,
        _b: Option<u64>,
    ) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({"alerts": []}))
    }
}
