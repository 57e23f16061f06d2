//! How a fleet rollout proceeds, as the user writes it ([`FleetPolicy`]), its validation, and
//! its expansion into the stages the rollout walks through ([`Stage`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::cohort::FULL;
use crate::field::FieldError;

/// Most steps a policy may list.
pub const MAX_STEPS: usize = 32;
/// Most stages the steps may expand to (an exponential step expands to several).
pub const MAX_STAGES: usize = 64;
/// Most named canary hosts.
pub const MAX_CANARY_HOSTS: usize = 100;
/// Longest host name.
pub const MAX_HOST_LEN: usize = 253;
/// Longest soak, deadline or wait: a week.
pub const MAX_SECONDS: u64 = 7 * 24 * 3600;

/// What to do when the gates say the candidate fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Every host that moved goes back to the stable spec (the default).
    #[default]
    Revert,
    /// The rollout stops where it is until someone resumes, promotes or reverts it.
    Pause,
}

/// When hosts pull the candidate's image ahead of their cutover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefetchMode {
    /// No pre-pull: a host pulls when it switches (the default).
    #[default]
    Off,
    /// The hosts of the next step pull while the current one runs; a step starts only when
    /// its reporting hosts hold the image.
    NextStep,
    /// The whole fleet pulls first; the first step starts only when every reporting host
    /// holds the image.
    Fleet,
}

/// Pre-pull settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prefetch {
    /// When hosts pull ahead.
    #[serde(default)]
    pub mode: PrefetchMode,
    /// Most hosts that start a pull per minute (the registry's pace): a pre-pulling host
    /// waits its own share of `hosts / max_per_minute` minutes. Unlimited when absent.
    #[serde(default)]
    pub max_per_minute: Option<u32>,
}

impl Default for Prefetch {
    fn default() -> Self {
        Self {
            mode: PrefetchMode::Off,
            max_per_minute: None,
        }
    }
}

/// When the failures stop a rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortIf {
    /// The rollout fails when more than this percent of the reporting hosts that should run
    /// the candidate failed… (default 0: any failure)
    #[serde(default)]
    pub failed_percent: f64,
    /// …and at least this many did (default 1).
    #[serde(default = "one")]
    pub min_hosts: u32,
}

fn one() -> u32 {
    1
}

impl Default for AbortIf {
    fn default() -> Self {
        Self {
            failed_percent: 0.0,
            min_hosts: 1,
        }
    }
}

/// An exponential series of steps: `start_percent`, then ×`factor` each step, up to
/// `until_percent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exponential {
    /// The first step's percent of the fleet.
    pub start_percent: f64,
    /// How much each step multiplies the last (more than 1, at most 10).
    pub factor: f64,
    /// Where the series ends (default 100).
    #[serde(default = "hundred")]
    pub until_percent: f64,
}

fn hundred() -> f64 {
    100.0
}

/// One step of a policy: how far it takes the cohort (exactly one of `percent`, `count`,
/// `exponential`), or a manual approval (`{"approval": true}` alone).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The share of the fleet on the candidate after this step, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// The number of known hosts on the candidate after this step (canaries included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// A series of percent steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential: Option<Exponential>,
    /// How long the step's hosts must stay healthy before the next step.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub soak_seconds: u64,
    /// Wait here until someone promotes the rollout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval: bool,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How a fleet rollout proceeds; every field has a default, so `{}` is a policy: 10%, then
/// everyone, reverting on any failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetPolicy {
    /// Hosts that run the candidate first, in a step of their own.
    #[serde(default)]
    pub canary_hosts: BTreeSet<String>,
    /// The steps after the canaries; a last step to 100% is added when they stop short.
    #[serde(default = "default_steps")]
    pub steps: Vec<Step>,
    /// Most hosts that may be switching (on the candidate, not yet healthy) at once; a step
    /// larger than this is taken in slices. Unlimited when absent.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// How long a host's containers must run (healthy, with a HEALTHCHECK) to count as
    /// healthy. 10 s.
    #[serde(default = "default_min_healthy")]
    pub min_healthy_seconds: u64,
    /// A host that is not healthy this long after it should have switched has failed. 5 min.
    #[serde(default = "default_healthy_deadline")]
    pub healthy_deadline_seconds: u64,
    /// A step whose hosts are not all healthy this long after it began fails the rollout.
    /// 10 min.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline_seconds: u64,
    /// A step advances only when at least this percent of its hosts report. 90.
    #[serde(default = "default_min_reported")]
    pub min_reported_percent: f64,
    /// When failures stop the rollout.
    #[serde(default)]
    pub abort_if: AbortIf,
    /// What a failure does.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Pre-pull of the candidate's image.
    #[serde(default)]
    pub prefetch: Prefetch,
}

fn default_steps() -> Vec<Step> {
    vec![
        Step {
            percent: Some(10.0),
            ..Step::default()
        },
        Step {
            percent: Some(100.0),
            ..Step::default()
        },
    ]
}

fn default_min_healthy() -> u64 {
    10
}

fn default_healthy_deadline() -> u64 {
    300
}

fn default_progress_deadline() -> u64 {
    600
}

fn default_min_reported() -> f64 {
    90.0
}

impl Default for FleetPolicy {
    fn default() -> Self {
        Self {
            canary_hosts: BTreeSet::new(),
            steps: default_steps(),
            max_in_flight: None,
            min_healthy_seconds: default_min_healthy(),
            healthy_deadline_seconds: default_healthy_deadline(),
            progress_deadline_seconds: default_progress_deadline(),
            min_reported_percent: default_min_reported(),
            abort_if: AbortIf::default(),
            on_failure: OnFailure::default(),
            prefetch: Prefetch::default(),
        }
    }
}

/// What a stage of a rollout does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// The named canary hosts switch.
    Canary,
    /// The cohort grows to this threshold (basis points of the fleet).
    Threshold(u32),
    /// The cohort grows to this many known hosts.
    Count(u32),
    /// Wait for a promote.
    Approval,
}

/// One stage: what it does and how long its hosts soak after its gate passed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// What the stage does.
    pub kind: StageKind,
    /// Seconds of healthy running before the next stage.
    #[serde(default)]
    pub soak_seconds: u64,
}

fn percent_bp(percent: f64) -> u32 {
    // Validated to (0, 100]; the cast is exact after the clamp.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bp = (percent * 100.0).round().clamp(1.0, f64::from(FULL)) as u32;
    bp
}

fn check_seconds(field: &str, value: u64, min: u64) -> Result<(), FieldError> {
    if (min..=MAX_SECONDS).contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("must be {min} to {MAX_SECONDS} seconds"),
        ))
    }
}

fn check_percent(field: &str, value: f64, zero_ok: bool) -> Result<(), FieldError> {
    let low_ok = if zero_ok { value >= 0.0 } else { value > 0.0 };
    if value.is_finite() && low_ok && value <= 100.0 {
        Ok(())
    } else {
        let low = if zero_ok { "0" } else { "more than 0" };
        Err(FieldError::new(
            field,
            format!("must be a number from {low} to 100"),
        ))
    }
}

/// A host name as workers report it: 1 to 253 printable ASCII characters without spaces.
///
/// # Errors
/// A [`FieldError`] on `field`.
pub fn host_name(field: &str, host: &str) -> Result<(), FieldError> {
    if host.is_empty() || host.len() > MAX_HOST_LEN || !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_HOST_LEN} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

impl FleetPolicy {
    /// Checks every field; the errors name the field (`policy.steps[1].percent`) and the rule.
    ///
    /// # Errors
    /// Every rule broken.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut push = |r: Result<(), FieldError>| {
            if let Err(e) = r {
                errors.push(e);
            }
        };
        if self.canary_hosts.len() > MAX_CANARY_HOSTS {
            push(Err(FieldError::new(
                "policy.canary_hosts",
                format!("must list at most {MAX_CANARY_HOSTS} hosts"),
            )));
        }
        for host in &self.canary_hosts {
            push(host_name("policy.canary_hosts", host));
        }
        if self.steps.len() > MAX_STEPS {
            push(Err(FieldError::new(
                "policy.steps",
                format!("must list at most {MAX_STEPS} steps"),
            )));
        }
        for (i, step) in self.steps.iter().enumerate() {
            for e in step.problems(&format!("policy.steps[{i}]")) {
                push(Err(e));
            }
        }
        if self.max_in_flight == Some(0) {
            push(Err(FieldError::new(
                "policy.max_in_flight",
                "must be at least 1",
            )));
        }
        push(check_seconds(
            "policy.min_healthy_seconds",
            self.min_healthy_seconds,
            0,
        ));
        push(check_seconds(
            "policy.healthy_deadline_seconds",
            self.healthy_deadline_seconds,
            1,
        ));
        push(check_seconds(
            "policy.progress_deadline_seconds",
            self.progress_deadline_seconds,
            1,
        ));
        push(check_percent(
            "policy.min_reported_percent",
            self.min_reported_percent,
            true,
        ));
        push(check_percent(
            "policy.abort_if.failed_percent",
            self.abort_if.failed_percent,
            true,
        ));
        if self.abort_if.min_hosts == 0 {
            push(Err(FieldError::new(
                "policy.abort_if.min_hosts",
                "must be at least 1",
            )));
        }
        if self.prefetch.max_per_minute == Some(0) {
            push(Err(FieldError::new(
                "policy.prefetch.max_per_minute",
                "must be at least 1",
            )));
        }
        if errors.is_empty()
            && let Err(e) = self.stages()
        {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The stages the rollout walks through: the canaries (if any), the steps in order
    /// (an exponential step expanded), and a last stage to the whole fleet when the steps
    /// stop short of it.
    ///
    /// # Errors
    /// A step that would shrink the cohort, or too many stages.
    pub fn stages(&self) -> Result<Vec<Stage>, FieldError> {
        let mut stages = Vec::new();
        if !self.canary_hosts.is_empty() {
            stages.push(Stage {
                kind: StageKind::Canary,
                soak_seconds: 0,
            });
        }
        let mut last_bp = 0;
        let mut last_count = 0;
        for (i, step) in self.steps.iter().enumerate() {
            let field = format!("policy.steps[{i}]");
            let mut add = |kind: StageKind, field: &str| -> Result<(), FieldError> {
                match kind {
                    StageKind::Threshold(bp) if bp < last_bp => {
                        return Err(FieldError::new(
                            field,
                            format!(
                                "must not be less than the step before ({}%)",
                                f64::from(last_bp) / 100.0
                            ),
                        ));
                    }
                    StageKind::Threshold(bp) => last_bp = bp,
                    StageKind::Count(n) if n < last_count => {
                        return Err(FieldError::new(
                            field,
                            format!("must not be less than the step before ({last_count} hosts)"),
                        ));
                    }
                    StageKind::Count(n) => last_count = n,
                    _ => {}
                }
                stages.push(Stage {
                    kind,
                    soak_seconds: step.soak_seconds,
                });
                if stages.len() > MAX_STAGES {
                    return Err(FieldError::new(
                        "policy.steps",
                        format!("must expand to at most {MAX_STAGES} steps"),
                    ));
                }
                Ok(())
            };
            if let Some(p) = step.percent {
                add(
                    StageKind::Threshold(percent_bp(p)),
                    &format!("{field}.percent"),
                )?;
            } else if let Some(n) = step.count {
                add(StageKind::Count(n), &format!("{field}.count"))?;
            } else if let Some(exp) = &step.exponential {
                let mut p = exp.start_percent;
                loop {
                    let capped = p.min(exp.until_percent);
                    add(
                        StageKind::Threshold(percent_bp(capped)),
                        &format!("{field}.exponential"),
                    )?;
                    if capped >= exp.until_percent {
                        break;
                    }
                    p *= exp.factor;
                }
            } else {
                add(StageKind::Approval, &field)?;
            }
        }
        if last_bp < FULL {
            stages.push(Stage {
                kind: StageKind::Threshold(FULL),
                soak_seconds: 0,
            });
        }
        Ok(stages)
    }
}

impl Step {
    fn problems(&self, field: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let sizes = usize::from(self.percent.is_some())
            + usize::from(self.count.is_some())
            + usize::from(self.exponential.is_some());
        if sizes > 1 {
            errors.push(FieldError::new(
                field,
                "must set only one of percent, count and exponential",
            ));
        }
        if sizes == 0 && !self.approval {
            errors.push(FieldError::new(
                field,
                "must set one of percent, count and exponential, or approval: true",
            ));
        }
        if let Some(p) = self.percent
            && let Err(e) = check_percent(&format!("{field}.percent"), p, false)
        {
            errors.push(e);
        }
        if self.count == Some(0) {
            errors.push(FieldError::new(
                format!("{field}.count"),
                "must be at least 1",
            ));
        }
        if let Some(exp) = &self.exponential {
            let f = format!("{field}.exponential");
            if let Err(e) = check_percent(&format!("{f}.start_percent"), exp.start_percent, false) {
                errors.push(e);
            }
            if let Err(e) = check_percent(&format!("{f}.until_percent"), exp.until_percent, false) {
                errors.push(e);
            }
            if !(exp.factor.is_finite() && exp.factor > 1.0 && exp.factor <= 10.0) {
                errors.push(FieldError::new(
                    format!("{f}.factor"),
                    "must be more than 1 and at most 10",
                ));
            }
            if exp.start_percent > exp.until_percent {
                errors.push(FieldError::new(
                    format!("{f}.start_percent"),
                    "must not be more than until_percent",
                ));
            }
        }
        if let Err(e) = check_seconds(&format!("{field}.soak_seconds"), self.soak_seconds, 0) {
            errors.push(e);
        }
        errors
    }
}
