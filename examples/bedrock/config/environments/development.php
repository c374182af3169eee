<?php
/** Development: show errors and log them to web/app/debug.log. */

define('WP_DEBUG', true);
define('WP_DEBUG_DISPLAY', true);
define('WP_DEBUG_LOG', true);
define('SCRIPT_DEBUG', true);
define('DISALLOW_FILE_MODS', false);
ini_set('display_errors', '1');
