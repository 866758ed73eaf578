//! The authenticated caller, as an extractor: a handler that takes a [`Caller`] can only
//! run for a request with a valid bearer token.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use futures::future::{Either, LocalBoxFuture};
use rollgate_auth::{Principal, Verified};
use rollgate_domain::{Actor, ActorId, Role, Team, TeamScope};

use crate::http::problem::Problem;
use crate::state::AppState;

/// Who is calling: the verified token and the domain actor built from it.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    pub actor: Actor,
    /// When the token ends (unix seconds): a long-lived answer such as the event stream
    /// ends there.
    pub expires_at: i64,
}

impl Caller {
    /// Builds the actor from a verified token. Roles this service does not know are
    /// ignored (tokens from a shared identity provider carry others); malformed team names
    /// are ignored too, so they can never widen access.
    pub fn from_verified(verified: Verified) -> Result<Self, Problem> {
        let Verified {
            principal,
            expires_at,
        } = verified;
        let id = ActorId::parse(&principal.sub)
            .map_err(|_| Problem::unauthenticated("the token's `sub` claim is empty"))?;
        let roles: Vec<Role> = principal
            .roles
            .iter()
            .filter_map(|r| Role::parse(r).ok())
            .collect();
        let teams = if principal.teams.iter().any(|t| t == "*") {
            TeamScope::All
        } else {
            TeamScope::Teams(
                principal
                    .teams
                    .iter()
                    .filter_map(|t| Team::parse(t).ok())
                    .collect(),
            )
        };
        Ok(Caller {
            actor: Actor::new(id, roles, teams),
            principal,
            expires_at,
        })
    }

    pub fn sub(&self) -> &str {
        &self.principal.sub
    }

    pub fn may_see(&self, team: &Team) -> bool {
        self.actor.may_access(team)
    }

    /// Reads open to every role (a gate, a flag file): a caller with a role this service
    /// knows.
    pub fn require_some_role(&self, action: &str) -> Result<(), Problem> {
        if self.actor.roles.is_empty() {
            return Err(rollgate_domain::DomainError::Permission {
                actor: self.actor.id.clone(),
                action: action.to_owned(),
                needed: rollgate_domain::Role::ALL.to_vec(),
            }
            .into());
        }
        Ok(())
    }

    /// R11 for a team the caller names (a policy, a new rollout): another team's answers
    /// as a team that does not exist.
    pub fn require_team(&self, team: &Team) -> Result<(), Problem> {
        if self.may_see(team) {
            return Ok(());
        }
        Err(rollgate_domain::DomainError::TeamNotAllowed {
            actor: self.actor.id.clone(),
            team: team.clone(),
        }
        .into())
    }
}

impl FromRequest for Caller {
    type Error = Problem;
    type Future =
        Either<Ready<Result<Self, Problem>>, LocalBoxFuture<'static, Result<Self, Problem>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        match authenticate(req) {
            Err(Unverified::UnknownKid) => {
                let req = req.clone();
                Either::Right(Box::pin(async move { authenticate_refreshing(&req).await }))
            }
            other => Either::Left(ready(other.map_err(Problem::from))),
        }
    }
}

/// Why [`authenticate`] did not produce a caller.
pub enum Unverified {
    /// The token names a key id the OpenID Connect provider may have just published:
    /// worth [`authenticate_refreshing`].
    UnknownKid,
    Refused(Problem),
}

impl From<Unverified> for Problem {
    fn from(u: Unverified) -> Self {
        match u {
            Unverified::UnknownKid => rollgate_auth::AuthError::UnknownKid.into(),
            Unverified::Refused(p) => p,
        }
    }
}

impl From<Problem> for Unverified {
    fn from(p: Problem) -> Self {
        Unverified::Refused(p)
    }
}

fn state_and_header(req: &HttpRequest) -> Result<(&web::Data<AppState>, Option<&str>), Problem> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(Problem::internal)?;
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    Ok((state, header))
}

/// The caller, without waiting: a token whose key is known (or cached) never waits.
pub fn authenticate(req: &HttpRequest) -> Result<Caller, Unverified> {
    let (state, header) = state_and_header(req)?;
    let now = state.clock.now().timestamp();
    match state.verifier.verify_authorization(header, now) {
        Err(rollgate_auth::AuthError::UnknownKid) if state.verifier.oidc_issuer().is_some() => {
            Err(Unverified::UnknownKid)
        }
        Err(e) => Err(Unverified::Refused(e.into())),
        Ok(verified) => Ok(Caller::from_verified(verified)?),
    }
}

/// The caller; with an OpenID Connect issuer, a token naming an unknown key id makes the
/// verifier fetch the provider's keys again (rate limited) before refusing it.
pub async fn authenticate_refreshing(req: &HttpRequest) -> Result<Caller, Problem> {
    match authenticate(req) {
        Err(Unverified::UnknownKid) => {
            let (state, header) = state_and_header(req)?;
            let now = state.clock.now().timestamp();
            let verified = state
                .verifier
                .verify_authorization_refreshing(header, now)
                .await?;
            Caller::from_verified(verified)
        }
        other => Ok(other?),
    }
}
