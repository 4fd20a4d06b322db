//! Why a bearer token was refused. The text is shown to the caller (after
//! "Invalid token: "); it never contains the token.

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("more than one Authorization header")]
    DuplicateHeader,
    #[error("malformed Authorization header")]
    MalformedHeader,
    #[error("token too long")]
    TooLong,
    #[error("malformed token")]
    Malformed,
    #[error("malformed token header")]
    MalformedJoseHeader,
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    #[error("unsupported critical header")]
    CriticalHeader,
    #[error("unsupported token type")]
    UnsupportedType,
    #[error("missing signature")]
    MissingSignature,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("malformed claims")]
    MalformedClaims,
    #[error("missing exp claim")]
    MissingExpiry,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    /// Better Auth's session-cache cookie tokens are signed with the same keys.
    #[error("not an API token")]
    NotAnApiToken,
    #[error("missing subject")]
    MissingSubject,
    /// Over 255 characters, or a control character (it would not fit the
    /// database's index, or PostgreSQL cannot store it).
    #[error("invalid subject")]
    InvalidSubject,
}
