//! A report's checked settings: what [`ReportConfig`]'s flags say once
//! they are validated and the catalog is read. Only [`Settings::new`]
//! builds one, so a report can never run on a bad value or a catalog that
//! failed to load, and the aggregator loads it once at start (a bad
//! catalog stops the start, not the exit report).

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Policy, ReportConfig, Rightsizing, Thresholds};

use super::ReportError;
use super::catalog::Catalog;
use super::rightsize::PriceList;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The window's length before `--as-of` (`None`: everything).
    pub window: Option<Duration>,
    pub policy: Policy,
    pub thresholds: Thresholds,
    pub rightsizing: Rightsizing,
    pub prices: PriceList,
    /// Judge by verified rows alone, every VM (`--require-auth`).
    pub require_auth: bool,
}

impl Settings {
    pub fn new(cfg: &ReportConfig) -> Result<Settings, ReportError> {
        cfg.validate()?;
        let catalog = match &cfg.rightsizing.catalog {
            Some(path) => Some(Arc::new(Catalog::load(path)?)),
            None => None,
        };
        Ok(Settings {
            window: cfg.window.length(),
            policy: cfg.policy,
            thresholds: cfg.thresholds.clone(),
            rightsizing: cfg.rightsizing.clone(),
            prices: PriceList {
                catalog,
                prices: cfg.prices(),
            },
            require_auth: cfg.require_auth,
        })
    }
}
