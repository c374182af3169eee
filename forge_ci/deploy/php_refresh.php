<?php
// Written by forge-ci into the release root (outside web/, so no URL reaches it)
// for one request and removed right after: PHP-FPM runs it when forge sends a
// FastCGI request straight to the pool's socket (php.refresh: opcache-reset).
// It acts only on the FORGE_PHP_REFRESH parameter, which a web request cannot
// carry (nginx passes client headers as HTTP_*); anything else gets a 404.
//
// Answer, one line: "forge-php-refresh <nonce> <state> [detail]"
//   ready    (probe) the pool runs this script and may reset its opcache
//   reset    opcache_reset() returned true: a restart of the cache is scheduled
//   pending  a restart is already scheduled
//   off      opcache is not enabled in this pool: there is no cache to go stale
//   refused  opcache.restrict_api forbids this script to reset the cache
//   failed   opcache_reset() returned false for another reason
//   settled  (settle) the restart has happened: every request from now on
//            clears its worker's realpath cache and compiles the files it runs
//   waiting  (settle) not yet: a request that began before the reset still runs.
//            Until it ends, workers skip the cache but may still resolve paths
//            through `current` from their realpath cache: the old release.

$ask = isset($_SERVER['FORGE_PHP_REFRESH']) ? (string) $_SERVER['FORGE_PHP_REFRESH'] : '';
if (PHP_SAPI !== 'fpm-fcgi' || !preg_match('/^(probe|reset|settle) ([0-9a-f]{32})$/D', $ask, $m)) {
    http_response_code(404);
    exit;
}
$mode = $m[1];
$nonce = $m[2];
header('Content-Type: text/plain; charset=utf-8');
header('Cache-Control: no-store');

function forge_answer(string $nonce, string $state, string $detail = ''): void
{
    echo "forge-php-refresh $nonce $state", $detail === '' ? '' : " $detail", "\n";
    exit;
}

if ($mode === 'settle') {
    $status = function_exists('opcache_get_status') ? @opcache_get_status(false) : false;
    $busy = is_array($status)
        && (!empty($status['restart_pending']) || !empty($status['restart_in_progress']));
    forge_answer($nonce, $busy ? 'waiting' : 'settled');
}
if ($mode === 'reset') {
    // This worker's realpath cache; every other worker clears its own when it
    // sees the opcache restart (ZendAccelerator.c, accel_activate).
    clearstatcache(true);
}
if (!function_exists('opcache_get_status')) {
    forge_answer($nonce, 'off', 'opcache-not-loaded');
}
$status = @opcache_get_status(false);
if (!is_array($status)) {
    $api = (string) ini_get('opcache.restrict_api');
    if ($api !== '' && strncmp(__FILE__, $api, strlen($api)) !== 0) {
        forge_answer($nonce, 'refused', 'opcache.restrict_api');
    }
    forge_answer($nonce, 'off');
}
// While a restart is pending, opcache_enabled reads false and opcache_reset()
// returns false: the reset asked for is already happening.
if (!empty($status['restart_pending']) || !empty($status['restart_in_progress'])) {
    forge_answer($nonce, $mode === 'probe' ? 'ready' : 'pending');
}
if (empty($status['opcache_enabled'])) {
    forge_answer($nonce, 'off');
}
if ($mode === 'probe') {
    forge_answer($nonce, 'ready');
}
if (opcache_reset()) {
    forge_answer($nonce, 'reset');
}
$after = @opcache_get_status(false);
if (is_array($after) && (!empty($after['restart_pending']) || !empty($after['restart_in_progress']))) {
    forge_answer($nonce, 'pending');
}
forge_answer($nonce, 'failed');
