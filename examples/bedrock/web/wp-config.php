<?php
/**
 * WordPress looks for wp-config.php in its own directory (web/wp) and then
 * one level up: here. Configuration lives in config/application.php.
 */

$forge_autoload = dirname(__DIR__) . '/vendor/autoload.php';
if (is_file($forge_autoload)) {
    require_once $forge_autoload;
}

require_once dirname(__DIR__) . '/config/application.php';
require_once ABSPATH . 'wp-settings.php';
