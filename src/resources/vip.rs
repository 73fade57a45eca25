//! The `vip` resource kind. (Placeholder: being written.)

use super::{Context, Resource, StepError, StepResult};
use crate::config;
use crate::exec::BoxFuture;

pub struct Vip;

impl Vip {
    pub fn new(_r: &config::Resource, _ctx: &Context) -> StepResult<Vip> {
        Err(StepError::Failed(
            "the vip resource kind is not implemented yet".into(),
        ))
    }
}

impl Resource for Vip {
    fn acquire(&self) -> BoxFuture<'_, StepResult> {
        Box::pin(async { Err(StepError::Failed("not implemented".into())) })
    }
    fn release(&self) -> BoxFuture<'_, StepResult> {
        Box::pin(async { Err(StepError::Failed("not implemented".into())) })
    }
    fn probe(&self) -> BoxFuture<'_, StepResult<bool>> {
        Box::pin(async { Err(StepError::Failed("not implemented".into())) })
    }
}
