//! Std locks that recover from poisoning.

use std::sync::{Mutex, MutexGuard, RwLock};

/// A std lock, recovering from poisoning: the guarded data stays consistent because no
/// critical section here can panic half-way. Std locks because no critical section awaits.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
