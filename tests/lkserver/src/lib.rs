//! Test-only stand-in for a LiveKit server (work in progress).
