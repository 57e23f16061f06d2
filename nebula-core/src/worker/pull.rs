//! The pull step of an app's plan: ask the registry when the plan says so, and fall back to the
//! image the engine already holds when the registry cannot serve it.
//!
//! # Guarantees
//! - A failed pull never stops a change whose image the engine holds: the containers are
//!   created from the local image and the step returns a [`PullFallback`] saying so (the
//!   worker logs it once and puts it in its report).
//! - Without a local image, nothing that needs one runs: creations and replacements are
//!   dropped from the plan (the running containers stay), while starts, health restarts and
//!   removals still happen.
//! - A reference pinned by digest that the engine holds is never pulled again: its content
//!   cannot differ.

use crate::plan::{Action, AppPlan, Pull};
use crate::report::{MAX_PULL_ERROR_LEN, PullFailure, PullFallback};
use crate::runtime::{RegistryAuth, Runtime, RuntimeError};

/// What the pull step found.
#[derive(Debug, PartialEq)]
pub(super) enum Prepared {
    /// The image is there and the registry was not asked (held, or nothing to create).
    Ready,
    /// The registry served the pull.
    Pulled,
    /// The pull failed; the engine's copy is used.
    Fallback(PullFallback),
    /// No image to create from: only the plan's actions that need none may run.
    Missing(String),
}

/// Makes sure the image of `plan` is on the host, as its [`Pull`] asks.
pub(super) async fn prepare(
    rt: &dyn Runtime,
    plan: &AppPlan,
    auth: Option<&RegistryAuth>,
    app_id: u64,
    now: u64,
) -> Prepared {
    let Some(image) = plan.image.as_deref() else {
        return Prepared::Ready;
    };
    let local = rt.image_id(image).await.unwrap_or(None);
    let pull = match plan.pull {
        Pull::Never => false,
        Pull::Always => local.is_none() || !image.contains('@'),
        Pull::IfMissing => local.is_none(),
        Pull::LocalOnly => {
            return match local {
                Some(_) => Prepared::Ready,
                None => Prepared::Missing(format!(
                    "image {image} is not on this host and the app's pull_policy is never; \
                     nothing was created or replaced"
                )),
            };
        }
    };
    if !pull {
        return Prepared::Ready;
    }
    tracing::info!(%image, "pulling");
    let Err(error) = rt.pull(image, auth).await else {
        return Prepared::Pulled;
    };
    // The pull may have failed half-way through a new copy: ask again what the engine holds.
    let local = match local {
        Some(id) => Some(id),
        None => rt.image_id(image).await.unwrap_or(None),
    };
    match local {
        Some(image_id) => Prepared::Fallback(PullFallback {
            image: image.to_owned(),
            image_id,
            failure: failure_of(&error),
            error: bounded(error.to_string()),
            app_id,
            at: now,
        }),
        None => Prepared::Missing(format!(
            "pull {image}: {error}; the engine does not hold the image, so nothing was created \
             or replaced"
        )),
    }
}

/// Whether an action needs the plan's image.
pub(super) fn needs_image(action: &Action) -> bool {
    matches!(action, Action::Create(_) | Action::Replace { .. })
}

fn failure_of(error: &RuntimeError) -> PullFailure {
    match error {
        RuntimeError::RegistryUnreachable(_) => PullFailure::Unreachable,
        _ => PullFailure::Refused,
    }
}

fn bounded(mut text: String) -> String {
    if text.len() > MAX_PULL_ERROR_LEN {
        let mut end = MAX_PULL_ERROR_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Call, FakeRuntime, fake_image_id};

    fn plan(pull: Pull, image: &str) -> AppPlan {
        AppPlan {
            actions: Vec::new(),
            pull,
            image: Some(image.to_owned()),
            requeue_after_secs: None,
            problems: Vec::new(),
        }
    }

    async fn step(rt: &FakeRuntime, pull: Pull, image: &str) -> Prepared {
        prepare(rt, &plan(pull, image), None, 7, 100).await
    }

    fn pulls(rt: &FakeRuntime) -> usize {
        rt.calls()
            .iter()
            .filter(|c| matches!(c, Call::Pull(_)))
            .count()
    }

    #[tokio::test]
    async fn an_unreachable_registry_falls_back_to_the_local_image() {
        let rt = FakeRuntime::new(2, &["site:1"]);
        rt.load_image("site:1");
        rt.set_registry_down(true);
        let Prepared::Fallback(f) = step(&rt, Pull::Always, "site:1").await else {
            panic!("expected a fallback")
        };
        assert_eq!(f.failure, PullFailure::Unreachable);
        assert_eq!(f.image_id, fake_image_id("site:1"));
        assert_eq!((f.app_id, f.at, f.image.as_str()), (7, 100, "site:1"));
        assert!(f.error.contains("no such host"), "{}", f.error);
        assert_eq!(pulls(&rt), 1, "the registry was asked");
    }

    #[tokio::test]
    async fn a_refused_pull_with_a_local_image_falls_back_too_and_says_refused() {
        let rt = FakeRuntime::new(2, &[]);
        rt.load_image("built-here:dev");
        let Prepared::Fallback(f) = step(&rt, Pull::Always, "built-here:dev").await else {
            panic!("expected a fallback")
        };
        assert_eq!(f.failure, PullFailure::Refused);
    }

    #[tokio::test]
    async fn without_a_local_image_a_failed_pull_leaves_nothing_to_create_from() {
        let rt = FakeRuntime::new(2, &["site:1"]);
        rt.set_registry_down(true);
        for pull in [Pull::Always, Pull::IfMissing] {
            let Prepared::Missing(why) = step(&rt, pull, "site:1").await else {
                panic!("expected missing")
            };
            assert!(
                why.contains("pull site:1") && why.contains("nothing was created"),
                "{why}"
            );
        }
        let rt = FakeRuntime::new(2, &[]);
        assert!(matches!(
            step(&rt, Pull::Always, "nope:1").await,
            Prepared::Missing(_)
        ));
    }

    #[tokio::test]
    async fn each_policy_asks_the_registry_only_when_it_should() {
        let rt = FakeRuntime::new(2, &["site:1"]);
        rt.load_image("site:1");
        assert_eq!(step(&rt, Pull::IfMissing, "site:1").await, Prepared::Ready);
        assert_eq!(step(&rt, Pull::LocalOnly, "site:1").await, Prepared::Ready);
        assert_eq!(step(&rt, Pull::Never, "site:1").await, Prepared::Ready);
        assert_eq!(pulls(&rt), 0, "a held image is not pulled but by Always");
        assert_eq!(step(&rt, Pull::Always, "site:1").await, Prepared::Pulled);
        assert_eq!(pulls(&rt), 1);
        let Prepared::Missing(why) = step(&rt, Pull::LocalOnly, "other:1").await else {
            panic!("expected missing")
        };
        assert!(why.contains("pull_policy is never"), "{why}");
        assert_eq!(pulls(&rt), 1, "never means never");
    }

    #[tokio::test]
    async fn a_held_digest_is_not_pulled_again() {
        let image = format!("site@sha256:{}", "a".repeat(64));
        let rt = FakeRuntime::new(2, &[]);
        rt.load_image(&image);
        assert_eq!(step(&rt, Pull::Always, &image).await, Prepared::Ready);
        assert_eq!(pulls(&rt), 0);
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let cut = bounded("é".repeat(MAX_PULL_ERROR_LEN));
        assert!(cut.len() <= MAX_PULL_ERROR_LEN && cut.len() >= MAX_PULL_ERROR_LEN - 1);
        assert_eq!(bounded("short".into()), "short");
    }
}
